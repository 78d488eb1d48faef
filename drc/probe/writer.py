"""The probe: a client of the public service that writes a row and a small file every 100 ms
(issue 10 point 6; SOP EM-2 step 6, EM-3). Runs from outside both sites (the lab's outsider
network namespace, or any machine outside): the public name is resolved by asking the site's DNS
servers and re-resolved only when the answer's TTL has run out (as a caching resolver would), each
write goes over HTTPS with the certificate verified for the public name, and each acknowledged
write is logged as one JSON line. Standard library + dnspython (no remote library: it runs where
no SSH key is)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from drc.site import Site
from drc.traffic.dns import ask

INTERVAL_S = 0.1
WRITE_TIMEOUT_S = 3.0


class ProbeError(RuntimeError):
    pass


@dataclass
class Resolved:
    address: str
    expires: float  # monotonic
    server: str
    ttl: int


class TtlResolver:
    """Asks the authoritative servers in turn (the first that answers wins) and keeps the answer for
    its TTL; `clock` is injectable for the unit test."""

    def __init__(self, name: str, servers: list[str], port: int = 53, clock=time.monotonic, asker=ask):
        self.name, self.servers, self.port, self.clock, self.asker = name, servers, port, clock, asker
        self.cached: Resolved | None = None
        self.lookups = 0

    def address(self) -> tuple[str, Resolved | None]:
        """The address to use, and the new answer when this call had to ask (None from the cache)."""
        now = self.clock()
        if self.cached and now < self.cached.expires:
            return self.cached.address, None
        errors = []
        for server in self.servers:
            a = self.asker(server, self.port, self.name)
            self.lookups += 1
            if a.addresses:
                self.cached = Resolved(a.addresses[0], now + (a.ttl or 0), server, a.ttl or 0)
                return self.cached.address, self.cached
            errors.append(f"{server}: {a.error}")
        if self.cached:  # every server failed: keep the stale answer, as resolvers serve stale
            return self.cached.address, None
        raise ProbeError(f"cannot resolve {self.name}: {'; '.join(errors)}")


class _Conn(http.client.HTTPSConnection):
    """HTTPS to one address with SNI and certificate checks for the public name."""

    def __init__(self, address: str, server_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(address, 443, context=context, timeout=timeout)
        self.server_name = server_name

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)


def servers_of(site: Site) -> tuple[list[str], int]:
    t = site.traffic
    if t is None:
        raise ProbeError(f"site {site.site}: no traffic settings (public name, its DNS). Fix: add `traffic:` to the site file.")
    if t.dns_update:
        return [str(s) for s in t.dns_update.servers], t.dns_update.port
    raise ProbeError("traffic.method command: the probe needs the DNS servers to ask; give them with --dns-server")


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def run(site: Site, log_path: Path, duration_s: float | None, interval_s: float = INTERVAL_S,
        dns_servers: list[str] | None = None, out: IO[str] | None = None) -> dict:
    """Write every `interval_s` until `duration_s` passes or SIGTERM/SIGINT; returns the summary."""
    t = site.traffic
    servers, port = (dns_servers, 53) if dns_servers else servers_of(site)
    resolver = TtlResolver(t.public_name, servers, port)
    ctx = ssl_context(t.ca_file)
    path = site.spse_app.context_path + "/dokumen"
    run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
    stop = {"now": False}

    def _stop(*_a):
        stop["now"] = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    mono0, wall0 = time.monotonic(), time.time()
    wall = lambda m: round(wall0 + (m - mono0), 6)  # noqa: E731 (one clock for every row)
    conn: _Conn | None = None
    conn_address = None
    writes = acked = 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        def emit(row: dict) -> None:
            log.write(json.dumps(row) + "\n")
            log.flush()

        emit({"event": "start", "run": run_id, "public_name": t.public_name, "dns_servers": servers, "ttl": t.ttl,
              "interval_s": interval_s, "ca_file": str(t.ca_file) if t.ca_file else None, "at": wall(mono0)})
        seq = 0
        next_at = mono0
        try:
            while not stop["now"] and (duration_s is None or time.monotonic() - mono0 < duration_s):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval_s, time.monotonic())
                seq += 1
                try:
                    address, fresh = resolver.address()
                except ProbeError as exc:
                    emit({"event": "error", "seq": seq, "at": wall(time.monotonic()), "error": str(exc)})
                    continue
                if fresh:
                    emit({"event": "resolved", "at": wall(time.monotonic()), "address": address, "ttl": fresh.ttl, "server": fresh.server})
                name = f"probe-{run_id}-{seq:07d}"
                body = f"siaga probe {run_id} {seq}\n".encode() + os.urandom(96)
                digest = hashlib.sha256(body).hexdigest()
                if conn is None or conn_address != address:
                    if conn:
                        conn.close()
                    conn, conn_address = _Conn(address, t.public_name, ctx, WRITE_TIMEOUT_S), address
                sent = time.monotonic()
                writes += 1
                row = {"seq": seq, "name": name, "sha256": digest, "size": len(body), "sent": wall(sent), "address": address}
                try:
                    conn.request("POST", f"{path}?name={name}", body=body,
                                 headers={"Host": t.public_name, "Content-Type": "application/octet-stream"})
                    resp = conn.getresponse()
                    data = resp.read()
                    done = time.monotonic()
                    if resp.status == 201:
                        doc = json.loads(data)
                        if doc.get("sha256") != digest:
                            raise ProbeError(f"server stored sha256 {doc.get('sha256')}, sent {digest}")
                        acked += 1
                        emit({**row, "event": "ack", "acked": wall(done), "ms": round((done - sent) * 1000, 1),
                              "id": doc.get("id"), "timeline": doc.get("timeline")})
                    else:
                        emit({**row, "event": "refused", "at": wall(done), "status": resp.status, "body": data[:200].decode(errors="replace")})
                except (OSError, http.client.HTTPException, ssl.SSLError, ValueError, ProbeError) as exc:
                    emit({**row, "event": "error", "at": wall(time.monotonic()), "error": f"{type(exc).__name__}: {exc}"[:300]})
                    conn.close()
                    conn = None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if conn:
                conn.close()
            summary = {"event": "end", "run": run_id, "at": wall(time.monotonic()), "writes": writes, "acked": acked,
                       "dns_lookups": resolver.lookups}
            emit(summary)
    if out:
        out.write(json.dumps(summary) + "\n")
    return summary


def read_log(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ProbeError(f"cannot read the probe log {path}: {exc.strerror}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i != len(lines):  # only a last line cut short by a kill is forgiven
                raise ProbeError(f"{path}:{i}: not a JSON line") from None
    return rows


def gaps(rows: list[dict]) -> dict:
    """RTO as the probe sees it: the largest gap between consecutive acknowledged writes."""
    acks = sorted(r["acked"] for r in rows if r.get("event") == "ack")
    if len(acks) < 2:
        return {"acked": len(acks), "max_gap_s": None, "gap_from": None}
    worst = max(range(1, len(acks)), key=lambda i: acks[i] - acks[i - 1])
    return {"acked": len(acks), "max_gap_s": round(acks[worst] - acks[worst - 1], 3), "gap_from": acks[worst - 1]}
