"""The lab's CA and the certificate for the public name (drc/lab/tls.py): made once, keys 0600,
the certificate verifies against the CA for the public name only, a new name gets a new one."""

from __future__ import annotations

import ssl

from drc.lab import tls


def _verifies(p: dict, name: str) -> bool:
    """Verify the chain as a TLS client would, with Python's ssl against the CA file."""
    import socket
    import threading

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(p["cert"], p["key"])
    client = ssl.create_default_context(cafile=str(p["ca"]))
    a, b = socket.socketpair()
    result = {}

    def serve():
        try:
            with server.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client.wrap_socket(b, server_hostname=name) as c:
            c.sendall(b"x")
            result["ok"] = True
    except ssl.SSLCertVerificationError:
        result["ok"] = False
    t.join(5)
    return result["ok"]


def test_ca_and_certificate_made_once_keys_private(tmp_path):
    p = tls.ensure(tmp_path, "lpse.lab.example", "t")
    assert all(f.exists() for f in p.values())
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in (p["ca_key"], p["key"])} == {"ca.key": "0o600", "public.key": "0o600"}
    before = {k: f.read_bytes() for k, f in p.items()}
    assert {k: f.read_bytes() for k, f in tls.ensure(tmp_path, "lpse.lab.example", "t").items()} == before
    assert _verifies(p, "lpse.lab.example") and not _verifies(p, "other.lab.example")


def test_another_name_gets_a_new_certificate_from_the_same_ca(tmp_path):
    p = tls.ensure(tmp_path, "lpse.lab.example", "t")
    ca, cert = p["ca"].read_bytes(), p["cert"].read_bytes()
    p = tls.ensure(tmp_path, "spse.lab.example", "t")
    assert p["ca"].read_bytes() == ca and p["cert"].read_bytes() != cert
    assert _verifies(p, "spse.lab.example")
