"""The lab's authoritative DNS for the LPSE's public name (issue 10 point 4): Knot DNS on the lab
host `dns`, in a segment of its own outside both sites, as a province's or city's DNS would be.

Two authoritative servers on that host: ns1 (knot.service, the zone's primary, takes RFC 2136
updates signed with the lab's TSIG key only) and ns2 (knot-ns2.service, a secondary fed by NOTIFY
and zone transfer), so a switch has two servers to verify, one of them a little behind. The lab
configures them itself; production LPSEs do not run this server, they only send it updates.
The TSIG key is made on the workstation in the lab's secrets directory (0600) and written into
the DNS host's files directly (never on a command line). Idempotent: a zone that exists is never
rewritten, so `lab up` keeps what a switch-over set.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path
from typing import Callable

from drc.lab import tls
from drc.lab.shell import LabError, LabHosts, run, wait_for, write_into_root
from drc.site import load_site
from drc.traffic.dns import ask

DNS_HOST = "dns"
ZONE = "lab.example"
PUBLIC_NAME = f"lpse.{ZONE}"
KEY_NAME = "siaga-lab-update"
SECONDARY_OCTET = 11
READY_DEADLINE_S = 30.0
CA_ON_OUTSIDER = "/usr/local/share/ca-certificates/siaga-lab-ca.crt"  # on every lab host


def key_file(lab_dir: Path) -> Path:
    """The update key of the lab's DNS (the province's server, not a secret of the site): kept out
    of the site's secrets directory, which secret custody fetches back from the hosts."""
    return lab_dir / "dns" / "dns-update.key"


def ensure_key(path: Path, name: str) -> bytes:
    """The lab's TSIG key (hmac-sha256, 32 random bytes), made once, in BIND's key clause form."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    os.chmod(path, 0o600)
    from drc.traffic.dns import parse_key_text

    return parse_key_text(path.read_text())


def addresses(st: dict) -> tuple[str, str]:
    """ns1 and ns2: the DNS host's address and the second one it holds."""
    ns1 = st["hosts"][DNS_HOST]["address"]
    return ns1, ns1.rsplit(".", 1)[0] + f".{SECONDARY_OCTET}"


def primary_conf(ns1: str, ns2: str, secret_b64: str) -> str:
    return f"""# Written by siaga's lab (drc/lab/dns.py): ns1, the zone's primary.
server:
    rundir: "/run/knot"
    listen: [ "{ns1}@53" ]
log:
  - target: syslog
    any: info
database:
    storage: "/var/lib/knot"
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {secret_b64}
remote:
  - id: ns2
    address: "{ns2}@53"
acl:
  - id: signed-update
    key: {KEY_NAME}
    action: update
  - id: to-ns2
    address: "{ns2}"
    action: transfer
template:
  - id: default
    storage: "/var/lib/knot"
    file: "%s.zone"
zone:
  - domain: {ZONE}
    notify: ns2
    acl: [ signed-update, to-ns2 ]
    # Each update is written to the zone file at once: a restart serves what the last update set.
    zonefile-sync: 0
"""


def secondary_conf(ns1: str, ns2: str) -> str:
    return f"""# Written by siaga's lab (drc/lab/dns.py): ns2, a secondary of ns1.
server:
    rundir: "/run/knot-ns2"
    listen: [ "{ns2}@53" ]
log:
  - target: syslog
    any: info
database:
    storage: "/var/lib/knot-ns2"
remote:
  - id: ns1
    address: "{ns1}@53"
    via: "{ns2}"  # both addresses are on one interface: transfers must come from ns2's
acl:
  - id: from-ns1
    address: "{ns1}"
    action: notify
template:
  - id: default
    storage: "/var/lib/knot-ns2"
    file: "%s.zone"
zone:
  - domain: {ZONE}
    master: ns1
    acl: [ from-ns1 ]
"""


SECONDARY_UNIT = """# Written by siaga's lab (drc/lab/dns.py); shaped as Debian's knot.service.
[Unit]
Description=Knot DNS ns2 (siaga lab: secondary of ns1)
Wants=network-online.target
After=network-online.target knot.service

[Service]
Type=notify
User=knot
Group=knot
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETPCAP
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_SETPCAP
ExecStartPre=/usr/sbin/knotc -c /etc/knot/ns2.conf conf-check
ExecStart=/usr/sbin/knotd -c /etc/knot/ns2.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-abort
RuntimeDirectory=knot-ns2
StateDirectory=knot-ns2
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def zone_text(ns1: str, ns2: str, address: str, ttl: int) -> str:
    return f"""$ORIGIN {ZONE}.
$TTL 3600
@       SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 604800 60
@       NS  ns1.{ZONE}.
@       NS  ns2.{ZONE}.
ns1     A   {ns1}
ns2     A   {ns2}
lpse {ttl} A {address}
"""


def _ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == name:
            return int(parts[2]), int(parts[3])
    raise RuntimeError(f"no user {name} on the DNS host")


def ensure(lab: LabHosts, st: dict, log: Callable[[str], None] = print) -> None:
    """Knot installed and configured, both servers answering; TLS files and the outsider set up."""
    site = load_site(lab.site_file)
    t = site.traffic
    tls.ensure(lab.dir, t.public_name, lab.name)
    secret = ensure_key(t.dns_update.key_file, t.dns_update.key_name)
    ns1, ns2 = addresses(st)
    run(["ip", "-n", st["hosts"][DNS_HOST]["netns"], "addr", "replace", f"{ns2}/24", "dev", "eth0"])
    root = lab.rootfs(DNS_HOST) / "root"
    ssh = lab.ssh_cmd(DNS_HOST)
    if not (root / "usr/sbin/knotd").exists():
        start = time.monotonic()
        run(ssh + ["sudo", "apt-get", "update", "-qq"], timeout=300)
        run(ssh + ["sudo", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                   "knot", "knot-dnsutils"], timeout=300)
        log(f"lab {lab.name}: Knot DNS installed on {DNS_HOST} in {time.monotonic() - start:.1f}s")
    uid, gid = _ids(root, "knot")
    changed_ns1 = write_into_root(root / "etc/knot/knot.conf", primary_conf(ns1, ns2, base64.b64encode(secret).decode()), 0o640, gid)
    changed_ns2 = write_into_root(root / "etc/knot/ns2.conf", secondary_conf(ns1, ns2), 0o640, gid)
    unit = write_into_root(root / "etc/systemd/system/knot-ns2.service", SECONDARY_UNIT, 0o644)
    zone = root / f"var/lib/knot/{ZONE}.zone"
    if not zone.exists():
        write_into_root(zone, zone_text(ns1, ns2, str(t.addresses[site.active_site]), t.ttl), 0o640, gid)
        os.chown(zone, uid, gid)
        changed_ns1 = True
    for conf in ("knot.conf", "ns2.conf"):
        check = run(ssh + ["sudo", "knotc", "-c", f"/etc/knot/{conf}", "conf-check"], check=False, timeout=30)
        if check.returncode != 0:
            raise LabError(f"Knot config {conf} on {DNS_HOST} refused: {check.stderr.strip() or check.stdout.strip()}")
    if unit:
        run(ssh + ["sudo", "systemctl", "daemon-reload"], timeout=60)
    run(ssh + ["sudo", "systemctl", "enable", "-q", "knot", "knot-ns2"], timeout=60)
    for svc, changed in (("knot", changed_ns1), ("knot-ns2", changed_ns2)):
        run(ssh + ["sudo", "systemctl", "restart" if changed else "start", svc], timeout=60)

    def answering() -> bool:
        return all(not ask(server, 53, t.public_name, timeout=1).error for server in (ns1, ns2))

    wait_for(f"Knot on {DNS_HOST} ({ns1}, {ns2}) to answer {t.public_name}", answering, READY_DEADLINE_S, 0.2)
    _outsider(lab, st, ns1, ns2)


def _outsider(lab: LabHosts, st: dict, ns1: str, ns2: str) -> None:
    """The outsider resolves through the lab's DNS (then the machine's resolver for apt: an
    authoritative server refuses other names, and the resolver library moves on). Every lab host
    trusts the lab CA as hosts trust a public CA (the system bundle): the outsider as a client, the
    sites when one forwards to the other's public name during a switch-over."""
    root = lab.rootfs("outsider") / "root"
    write_into_root(root / "etc/resolv.conf", f"nameserver {ns1}\nnameserver {ns2}\nnameserver {st['resolver']}\n", 0o644)
    ca = tls.paths(lab.dir)["ca"].read_text()
    for host, d in st["hosts"].items():
        if d["site"] in ("primary", "drc", "outside") and write_into_root(lab.rootfs(host) / "root" / CA_ON_OUTSIDER.lstrip("/"), ca, 0o644):
            run(lab.ssh_cmd(host) + ["sudo", "update-ca-certificates"], timeout=60)
