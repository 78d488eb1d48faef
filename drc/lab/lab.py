"""The local two-site lab: real Debian hosts (the lab's platform: Debian 13 by default, or 12), each a
systemd-nspawn machine in its own netns.

Topology of a lab with index k (third octets 4k..4k+3 of 10.213.0.0/16):

    office   10.213.4k.0/24    the admin workstation: this machine, a portless bridge <p>w holding .1
    site A   10.213.4k+1.0/24  bridge <p>a, host `primary` .10
    site B   10.213.4k+2.0/24  bridge <p>b, host `drc` .10
    outside  10.213.4k+3.0/24  bridge <p>o, host `outsider` .10 (in no allowlist)
    dns      10.214.k.0/24     bridge <p>d, host `dns` .10 and .11: the public name's authoritative
                               DNS (Knot, drc/lab/dns.py), outside both sites. The /22 has no room
                               left, so each lab takes the /24 of the same index in a second block.

This machine routes between the bridges (so the WAN between A and B can be cut while the admin
still reaches both) and NATs the hosts to Debian's mirror only. Everything the lab creates is named
with its prefix <p> = "sg<k>" and recorded in its state file, so `down` and the leftover sweep remove
exactly what a lab made. Facts behind the choices: ../shared/LAB.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from drc.lab import alerts
from drc.lab.shell import LabError, run, wait_for
from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS

LABS_ROOT = Path(os.environ.get("SIAGA_LAB_ROOT", "/var/lib/siaga/labs"))
IMAGE_CACHE = Path(os.environ.get("SIAGA_IMAGE_CACHE", "/var/cache/siaga/images"))
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# What a fresh server of a provider looks like: systemd, sshd, python3 (for facts), sudo.
IMAGE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "nftables",
    "python3", "sudo", "procps", "ca-certificates",
)
NET_BASE = ipaddress.ip_network("10.213.0.0/16")
MAX_LABS = 64
HOST_OCTET = 10
ADMINS = ("budi", "sari")  # the lab's admins; the first is the account siaga connects as
BOOT_DEADLINE_S = 180.0  # a deadline: a host booting beside two other busy labs on 2 cores took over 90 s
STOP_DEADLINE_S = 30.0
# The lab's removable media (SOP BK-1, BK-9 offline copies): one image file per label under the lab's directory.
MEDIA_MOUNT_POINT = "/media/siaga-offline"
# The public name's DNS TTL in the lab's site file (production: 60 s, the site file's default).
LAB_DNS_TTL_S = 10
MEDIA_SIZE_MIB = 2048


@dataclass(frozen=True)
class LabHost:
    name: str
    site: str  # 'primary', 'drc', or 'outside'
    segment: int  # 1 = site A, 2 = site B, 3 = outside
    octet: int = HOST_OCTET  # last octet of its address in its segment


DEFAULT_SERVERS = 2  # primary + drc: the data tier's two hosts
MAX_SERVERS = 64


def lab_hosts(servers: int = DEFAULT_SERVERS) -> tuple[LabHost, ...]:
    """The hosts of a lab with `servers` servers: primary, drc and the outsider, then extra servers
    alternately in site A and site B (primary2 .11, drc2 .11, primary3 .12, ...). The extra ones
    are in the lab's site file for remote access only (`Lab.servers_site_file`), never in the data
    tier's: the default lab (2 servers) is exactly primary, drc, outsider."""
    if not DEFAULT_SERVERS <= servers <= MAX_SERVERS:
        raise LabError(f"servers {servers}: use {DEFAULT_SERVERS}..{MAX_SERVERS}")
    hosts = [LabHost("primary", "primary", 1), LabHost("drc", "drc", 2), LabHost("outsider", "outside", 3)]
    for i in range(DEFAULT_SERVERS, servers):
        n, site = i // 2 + 1, ("primary", "drc")[i % 2]
        hosts.append(LabHost(f"{site}{n}", site, 1 + i % 2, HOST_OCTET + n - 1))
    return tuple(hosts)
SEGMENT_BRIDGE = {1: "a", 2: "b", 3: "o"}
# The DNS segment (issue 10: a province's or city's DNS, outside both sites).
DNS_NET_BASE = ipaddress.ip_network("10.214.0.0/16")
DNS_SEGMENT = 4
DNS_HOST = LabHost("dns", "dns", DNS_SEGMENT)


def dns_block(index: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f"{DNS_NET_BASE.network_address + index * 256}/24")


def _add_dns(st: dict) -> None:
    """The DNS segment and host in a new lab's state (labs made before it have neither)."""
    net, p = dns_block(st["index"]), st["prefix"]
    st["segments"][str(DNS_SEGMENT)] = {"subnet": str(net), "bridge": f"{p}d", "gateway": str(net.network_address + 1)}
    st["hosts"][DNS_HOST.name] = {"site": DNS_HOST.site, "segment": DNS_SEGMENT, "address": str(net.network_address + HOST_OCTET),
                                  "netns": f"{p}-{DNS_HOST.name}", "veth": f"{p}-{DNS_HOST.name}"}


HOSTS = lab_hosts()


def lab_platform(st: dict) -> str:
    """The lab's platform (labs recorded before platforms were a lab setting ran Debian 12)."""
    return st.get("platform", "debian12")


def default_name() -> str:
    return os.environ.get("SIAGA_LAB", "lab")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise lab changes on this machine (two labs may be raised at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --- processes ---------------------------------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """Start time of a live process (None when gone or a zombie); reaps our own dead children."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(pid: int | None, start_time: int | None) -> bool:
    """True when pid still is the process we started (pids get reused)."""
    return bool(pid) and _start_time(pid) == start_time


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def container_leader(nspawn_pid: int) -> int | None:
    """PID (in our namespace) of the container's init: the first descendant in another pid ns."""
    own = os.readlink("/proc/self/ns/pid")
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop(0)
        with contextlib.suppress(OSError):
            if pid != nspawn_pid and os.readlink(f"/proc/{pid}/ns/pid") != own:
                return pid
            todo += _children(pid)
    return None


# --- the base image ----------------------------------------------------------------------------

def image_key(suite: str) -> str:
    spec = json.dumps([suite, MIRROR, sorted(IMAGE_PACKAGES), 1])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def ensure_image(log: Callable[[str], None] = print, platform: str = DEFAULT_PLATFORM) -> Path:
    """The cached debootstrap tree of a platform's suite (one per suite); rebuilt only when its
    package list changes."""
    suite = PLATFORMS[platform].suite
    image = IMAGE_CACHE / f"{suite}-{image_key(suite)}"
    if (image / ".siaga-complete").exists():
        return image
    with _locked(IMAGE_CACHE / ".lock"):
        if (image / ".siaga-complete").exists():
            return image
        for stale in IMAGE_CACHE.glob(f"{suite}-*"):  # older package lists and half-built trees
            if stale != image:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = IMAGE_CACHE / f".build-{image.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"building the lab image {image.name} with debootstrap (once; ~1 min)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}", suite, str(tmp), MIRROR])
        (tmp / "etc/apt/sources.list").write_text(
            f"deb {MIRROR} {suite} main\n"
            f"deb {MIRROR} {suite}-updates main\n"
            f"deb {SECURITY_MIRROR} {suite}-security main\n"
        )
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()  # each host gets its own keys
        (tmp / "etc/machine-id").write_text("")
        (tmp / "etc/hostname").write_text("debian\n")
        run(["chroot", str(tmp), "apt-get", "clean"])
        (tmp / ".siaga-complete").write_text(image.name + "\n")
        tmp.rename(image)
    return image


# --- the lab -----------------------------------------------------------------------------------

class Lab:
    def __init__(self, name: str):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", name):
            raise LabError(f"lab name {name!r}: use lowercase letters, digits and '-'")
        self.name = name
        self.dir = LABS_ROOT / name
        self.state_file = self.dir / "state.json"
        self.site_file = self.dir / "site.yaml"
        self.key_file = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"

    # state
    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def address(self, host: str) -> str:
        st = self.state() or {}
        return st["hosts"][host]["address"]

    def hosts(self, st: dict | None = None) -> tuple[LabHost, ...]:
        """This lab's hosts (the default three unless it was raised with more servers), and the DNS host."""
        st = st or self.state() or {}
        hosts = lab_hosts(st.get("servers", DEFAULT_SERVERS))
        return hosts + (DNS_HOST,) if DNS_HOST.name in st.get("hosts", {}) else hosts

    @property
    def servers_site_file(self) -> Path:
        """Site file with every server of the lab (remote access only); the same hosts as
        site.yaml unless the lab was raised with more than 2 servers."""
        return self.dir / "site-servers.yaml"

    def running_hosts(self) -> list[str]:
        st = self.state() or {}
        return [h for h, d in st.get("hosts", {}).items() if _alive(d.get("pid"), d.get("start_time"))]

    # up / down
    def up(self, log: Callable[[str], None] = print, servers: int | None = None, platform: str | None = None) -> dict:
        """Raise the lab; `servers` (default 2, or what the lab was raised with) is how many
        servers it has across the two sites (see lab_hosts); `platform` (default debian13, or what
        the lab was raised with) the Debian release of every host, written into its site files."""
        if platform is not None and platform not in PLATFORMS:
            raise LabError(f"platform {platform!r}: use one of {', '.join(PLATFORMS)}")
        with _locked(LABS_ROOT / ".lock"):
            sweep_leftovers(log)
            _raise_inotify_limit()
            st = self.state()
            if st and servers is not None and servers != st.get("servers", DEFAULT_SERVERS):
                raise LabError(f"lab {self.name} has {st.get('servers', DEFAULT_SERVERS)} servers, not {servers}: "
                               f"take it down first (siaga --lab {self.name} lab down)")
            if st and platform is not None and platform != lab_platform(st):
                raise LabError(f"lab {self.name} runs {lab_platform(st)}, not {platform}: "
                               f"take it down first (siaga --lab {self.name} lab down)")
            if st and all(h.name in self.running_hosts() for h in self.hosts(st)):
                self._wait_ready(st, log)
                self._services(st, log)
                return st
            if st:  # partly running: bring the missing hosts back, keep the rest
                log(f"lab {self.name}: restarting hosts that are down")
            else:
                st = self._create(log, servers or DEFAULT_SERVERS, platform or DEFAULT_PLATFORM)
            image = ensure_image(log, lab_platform(st))
            for h in self.hosts(st):
                if h.name not in self.running_hosts():
                    self._boot(st, h, image)
            self._wait_ready(st, log)
            self._services(st, log)
            return st

    def _services(self, st: dict, log: Callable[[str], None]) -> None:
        """What the lab runs besides its hosts: the public name's DNS and the TLS files (drc/lab/dns.py)."""
        if DNS_HOST.name not in st["hosts"]:
            log(f"lab {self.name} was made before the lab had a DNS host: take it down and up again to get one")
            return
        from drc.lab import dns

        start = time.monotonic()
        dns.ensure(self, st, log)
        log(f"lab {self.name}: DNS ({dns.PUBLIC_NAME}) and TLS ready in {time.monotonic() - start:.1f}s")
        alerts.ensure(self, st, log)

    def down(self, log: Callable[[str], None] = print) -> None:
        with _locked(LABS_ROOT / ".lock"):
            st = self.state()
            if st is None:
                log(f"lab {self.name}: not up")
                shutil.rmtree(self.dir, ignore_errors=True)
                return
            teardown(st, log)
            shutil.rmtree(self.dir, ignore_errors=True)
            log(f"lab {self.name}: removed")

    def _create(self, log: Callable[[str], None], servers: int = DEFAULT_SERVERS, platform: str = DEFAULT_PLATFORM) -> dict:
        index = _free_index()
        p = f"sg{index:02d}"
        net = lambda seg: ipaddress.ip_network(f"{NET_BASE.network_address + (index * 4 + seg) * 256}/24")  # noqa: E731
        st = {
            "name": self.name,
            "index": index,
            "prefix": p,
            "office": str(net(0)),
            "admin_address": str(net(0).network_address + 1),
            "segments": {str(seg): {"subnet": str(net(seg)), "bridge": f"{p}{SEGMENT_BRIDGE[seg]}",
                                    "gateway": str(net(seg).network_address + 1)} for seg in SEGMENT_BRIDGE},
            "servers": servers,
            "platform": platform,
            "hosts": {h.name: {"site": h.site, "segment": h.segment,
                               "address": str(net(h.segment).network_address + h.octet),
                               "netns": f"{p}-{h.name}", "veth": f"{p}-{h.name}"} for h in lab_hosts(servers)},
            "resolver": _resolver(),
            "mirrors": sorted(_mirror_addresses()),
            "wan_cut": False,
        }
        _add_dns(st)
        log(f"lab {self.name}: creating as {p} ({PLATFORMS[platform].label}) on {NET_BASE.network_address + index * 4 * 256}/22")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self._save(st)  # saved first, so a killed `up` is swept by the next one
        self._make_keys()
        _net_up(st)
        self._write_site(st)
        return st

    def _make_keys(self) -> None:
        for who in ADMINS:
            key = self.dir / ("id_ed25519" if who == ADMINS[0] else f"id_ed25519_{who}")
            if not key.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{who}@siaga-lab", "-f", str(key)])
            os.chmod(key, 0o600)

    def admin_key(self, who: str) -> Path:
        return self.key_file if who == ADMINS[0] else self.dir / f"id_ed25519_{who}"

    def _write_site(self, st: dict) -> None:
        seg = st["segments"]
        site = {
            "site": "lab",
            "platform": lab_platform(st),
            "admin_workstations": [f"{st['admin_address']}/32"],
            # The admin workstation's segment stands for the LPSE office (its label names it in the logbook).
            "ssh_allowlist": [{"network": st["office"], "label": "Kantor LPSE (lab)"}],
            "connection": {"user": ADMINS[0], "key_file": str(self.key_file), "known_hosts_file": str(self.known_hosts)},
            "admins": [
                {"name": who, "full_name": f"{who.title()} (lab admin)",
                 "ssh_keys": [self.admin_key(who).with_suffix(".pub").read_text().strip()]}
                for who in ADMINS
            ],
            "sites": {
                "primary": {"label": "Data center utama (lab site A)", "networks": [seg["1"]["subnet"]], "hosts": ["primary"]},
                "drc": {"label": "Disaster Recovery Center (lab site B)", "networks": [seg["2"]["subnet"]], "hosts": ["drc"]},
            },
            "hosts": {h: {"address": st["hosts"][h]["address"]} for h in ("primary", "drc")},
            # The lab sends no traffic beyond itself: time comes from the admin workstation.
            "base": {"ntp_servers": [st["admin_address"]]},
            "firewall": {"rollback_seconds": 20},
            # Generated credentials stay with the lab and go with `lab down`.
            "replication": {"secrets_dir": str(self.dir / "secrets")},
            "records_dir": str(self.dir / "records"),
            # Nor can it reach ClamAV's signature mirrors: clamd loads siaga's own database only.
            "clamav": {"signatures": "local"},
        }
        if DNS_HOST.name in st["hosts"]:
            site.update(self._public_service(st))
        site.update(alerts.site_settings(st))
        self.site_file.write_text("# Generated by `siaga lab up` for this lab; do not edit.\n" + yaml.safe_dump(site, sort_keys=False))
        # Every server (more than primary + drc when raised with more servers): remote access only.
        servers = [h for h in st["hosts"] if st["hosts"][h]["site"] in ("primary", "drc")]
        for role in ("primary", "drc"):
            site["sites"][role]["hosts"] = [h for h in servers if st["hosts"][h]["site"] == role]
        site["hosts"] = {h: {"address": st["hosts"][h]["address"]} for h in servers}
        self.servers_site_file.write_text("# Generated by `siaga lab up` for this lab (every server; remote access "
                                          "only); do not edit.\n" + yaml.safe_dump(site, sort_keys=False))

    def _public_service(self, st: dict) -> dict:
        """The site file's public name, its traffic switch (the lab's Knot DNS) and its certificate
        (the lab's CA, drc/lab/tls.py)."""
        from drc.lab import dns, tls

        ns1, ns2 = dns.addresses(st)
        files = tls.paths(self.dir)
        return {
            "spse_app": {"server_name": dns.PUBLIC_NAME,
                         "tls_certificate_file": "/etc/ssl/certs/siaga-public.pem", "tls_key_file": "/etc/ssl/private/siaga-public.key",
                         "tls_certificate_source": str(files["cert"]), "tls_key_source": str(files["key"]),
                         # The lab CA as the chain: clients get it, and a switch-over's forward verifies the other site with it.
                         "tls_chain_file": "/etc/ssl/certs/siaga-chain.pem", "tls_chain_source": str(files["ca"])},
            # 10 s keeps the lab's switch-over tests short; bench/switchover.py measures with 60 s (the issue's goal).
            "traffic": {"public_name": dns.PUBLIC_NAME, "ttl": LAB_DNS_TTL_S,
                        "addresses": {role: st["hosts"][role]["address"] for role in ("primary", "drc")},
                        "method": "dns-update",
                        "dns_update": {"servers": [ns1, ns2], "zone": dns.ZONE, "key_name": dns.KEY_NAME,
                                       "key_file": str(dns.key_file(self.dir))},
                        "ca_file": str(files["ca"])},
        }

    def rootfs(self, host: str) -> Path:
        return self.dir / "machines" / host

    def _boot(self, st: dict, h: LabHost, image: Path) -> None:
        d = st["hosts"][h.name]
        base = self.rootfs(h.name)
        root, upper, work = base / "root", base / "upper", base / "work"
        fresh = not upper.exists()
        for p in (root, upper, work):
            p.mkdir(parents=True, exist_ok=True)
        if not os.path.ismount(root):
            run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={upper},workdir={work}", str(root)])
        if fresh:
            self._provision(st, h, root)
        _host_net_up(st, h.name)
        log_file = open(base / "console.log", "ab")
        # nspawn starts in a cgroup of its own (see _machine_cgroups), entered before exec.
        d["cgroup"] = _machine_cgroup(st, h.name)
        enter = " && ".join(f"echo 0 > {shlex.quote(str(c / 'cgroup.procs'))}" for c in _machine_cgroups(d["cgroup"]))
        proc = subprocess.Popen(
            ["sh", "-c", f'{enter} && exec "$@"', "sh",
             "systemd-nspawn", "-D", str(root), "--boot", "--register=no", "--keep-unit",
             f"--machine={st['prefix']}-{h.name}", f"--network-namespace-path=/run/netns/{d['netns']}",
             "--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--resolv-conf=off", "--timezone=off",
             "--link-journal=no", "--console=passive"],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        d["pid"], d["start_time"] = proc.pid, _start_time(proc.pid)
        self._save(st)

    def _provision(self, st: dict, h: LabHost, root: Path) -> None:
        """First boot of a host: its own identity, the provider's first account, lab keys."""
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        (root / "etc/resolv.conf").write_text(f"nameserver {st['resolver']}\n")
        run(["chroot", str(root), "ssh-keygen", "-A"])
        pub = self.key_file.with_suffix(".pub").read_text()
        for home, user in ((root / "root", "root"), (root / "home" / ADMINS[0], ADMINS[0])):
            if user != "root":
                run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", user])
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(pub)
            os.chmod(ssh_dir / "authorized_keys", 0o600)
            run(["chroot", str(root), "chown", "-R", f"{user}:{user}", f"/{home.relative_to(root)}/.ssh"])
        sudoers = root / "etc/sudoers.d/90-provider-first-account"
        sudoers.write_text(f"{ADMINS[0]} ALL=(ALL) NOPASSWD:ALL\n")
        os.chmod(sudoers, 0o440)
        host_key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        line = f"{st['hosts'][h.name]['address']} {' '.join(host_key)}\n"
        with open(self.known_hosts, "a") as fh:
            fh.write(line)

    def ssh_cmd(self, host: str, user: str | None = None, key: Path | None = None) -> list[str]:
        """An ssh command line (for the lab's own checks and for tests) to a lab host."""
        return ["ssh", "-F", "/dev/null", "-i", str(key or self.key_file), "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=3",
                f"{user or ADMINS[0]}@{self.address(host)}"]

    def _wait_ready(self, st: dict, log: Callable[[str], None]) -> None:
        def booted(host: str) -> Callable[[], bool]:
            def check() -> bool:
                if host not in self.running_hosts():
                    raise LabError(f"lab host {host} stopped while booting; see {self.rootfs(host) / 'console.log'}")
                proc = run(self.ssh_cmd(host) + ["systemctl", "is-system-running"], check=False, timeout=15)
                return proc.stdout.strip() in ("running", "degraded")
            return check
        hosts = self.hosts(st)
        for h in hosts:
            wait_for(f"lab host {h.name} to boot and accept SSH", booted(h.name), BOOT_DEADLINE_S, 0.3)
        log(f"lab {self.name}: {len(hosts)} hosts up")

    # faults and reboots
    def stop_host(self, host: str, kill: bool = False) -> None:
        """Shut a host down (orderly), or kill it outright: a site loss."""
        st = self.state()
        _stop_machine(st["hosts"][host], kill)
        self._save(st)

    def restart_host(self, host: str) -> None:
        """A real reboot: the machine stops, its network namespace (and firewall state) is lost."""
        st = self.state()
        if st is None:
            raise LabError(f"lab {self.name} is not up")
        with _locked(LABS_ROOT / ".lock"):
            d = st["hosts"][host]
            _stop_machine(d, kill=False)
            _host_net_down(st, host)
            self._boot(st, next(h for h in self.hosts(st) if h.name == host), ensure_image(platform=lab_platform(st)))
            self._wait_ready(st, lambda _m: None)

    def set_wan(self, cut: bool) -> None:
        """Cut or heal the WAN between site A and site B; the admin still reaches both."""
        st = self.state()
        if st is None:
            raise LabError(f"lab {self.name} is not up")
        table, a, b = _nft_table(st), st["segments"]["1"]["bridge"], st["segments"]["2"]["bridge"]
        run(["nft", "flush", "chain", "inet", table, "wan"])
        if cut:
            _nft(f"add rule inet {table} wan iifname {{ \"{a}\", \"{b}\" }} oifname {{ \"{a}\", \"{b}\" }} drop")
        st["wan_cut"] = cut
        self._save(st)

    def set_wan_rate(self, mbit: int | None) -> None:
        """Limit what enters each site's network to `mbit` Mbit/s (a token bucket on both site bridges:
        an inter-site link's bandwidth, also felt by the admin's traffic), or lift it (None)."""
        st = self.state()
        if st is None:
            raise LabError(f"lab {self.name} is not up")
        for seg in ("1", "2"):
            bridge = st["segments"][seg]["bridge"]
            if mbit:
                run(["tc", "qdisc", "replace", "dev", bridge, "root", "tbf", "rate", f"{int(mbit)}mbit", "burst", "256kb",
                     "latency", "50ms"])
            else:
                run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False)  # none set: nothing to lift
        st["wan_mbit"] = mbit
        self._save(st)

    # --- disks plugged into a host: the removable media (SOP BK-9 offline copy), small test disks --
    def disk_image(self, name: str) -> Path:
        return self.dir / "disks" / f"{name}.img"

    def disk_attach(self, name: str, host: str, mount_point: str, size_mib: int) -> dict:
        """Plug a lab disk into a host: an ext4 image file (made once, kept across attaches like a
        real disk) on a loop device, mounted at `mount_point` inside that host only (a device node
        in the container's /dev, mounted from its mount namespace). Idempotent."""
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,20}", name):
            raise LabError(f"disk name {name!r}")
        with _locked(LABS_ROOT / ".lock"):
            st = self.state()
            if st is None or host not in self.running_hosts():
                raise LabError(f"lab {self.name}: host {host!r} is not running")
            disks = st.setdefault("disks", {})
            if disks.get(name):
                if disks[name]["host"] != host:
                    raise LabError(f"disk {name} is attached to {disks[name]['host']}: detach it first")
                return disks[name]
            img = self.disk_image(name)
            if not img.exists():
                img.parent.mkdir(parents=True, exist_ok=True)
                run(["truncate", "-s", f"{size_mib}M", str(img)])
                run(["mkfs.ext4", "-q", "-L", f"SIAGA-{name.upper()}"[:16], "-m", "0", str(img)])
            loop = run(["losetup", "--find", "--show", str(img)]).stdout.strip()
            disks[name] = {"host": host, "loop": loop, "mount_point": mount_point, "node": f"/dev/siaga-disk-{name}"}
            self._save(st)  # saved before mounting: a failure below is still detached by `down`
            rdev = os.stat(loop).st_rdev
            leader = container_leader(st["hosts"][host]["pid"])
            if leader is None:
                raise LabError(f"{host}: container not found")
            node = disks[name]["node"]
            run(["nsenter", "-t", str(leader), "-m", "--", "sh", "-c",
                 f"mkdir -p {shlex.quote(mount_point)} && rm -f {node} && mknod {node} b {os.major(rdev)} {os.minor(rdev)} "
                 f"&& mount -t ext4 {node} {shlex.quote(mount_point)}"])
            return disks[name]

    def disk_detach(self, name: str) -> dict | None:
        """Unplug a lab disk (unmounted inside its host, loop device freed). Idempotent."""
        with _locked(LABS_ROOT / ".lock"):
            st = self.state()
            if st is None or not (st.get("disks") or {}).get(name):
                return None
            d = st["disks"][name]
            _disks_down(st, [name])
            self._save(st)
            return d

    def media_attach(self, host: str = "drc", mount_point: str = MEDIA_MOUNT_POINT, label: str = "OFFLINE-A") -> dict:
        """Plug in the removable medium `label` of the offline copies (SOP BK-1, BK-9): one image
        per label, kept across attaches like a real disk, blank until `siaga backup offline
        --init-medium` labels it (siaga finds it by that label file, not by this disk's name).
        One medium at a time at the mount point; plugging in another one first unplugs it. Idempotent."""
        if not re.fullmatch(r"[A-Z0-9][A-Z0-9-]{0,14}", label):
            raise LabError(f"medium label {label!r} (e.g. OFFLINE-B)")
        name = f"medium-{label.lower()}"
        for other in self.media_attached():
            if other != name:
                self.disk_detach(other)
        return {**self.disk_attach(name, host, mount_point, MEDIA_SIZE_MIB), "label": label}

    def media_attached(self) -> list[str]:
        """The lab disks that are offline media ("offline": the one medium before media had labels)."""
        st = self.state() or {}
        return [n for n in st.get("disks") or {} if n.startswith("medium-") or n == "offline"]

    def media_detach(self, label: str | None = None) -> dict | None:
        """Unplug medium `label`, or whichever medium is plugged in. Idempotent."""
        names = [f"medium-{label.lower()}"] if label else self.media_attached()
        gone = [d for d in (self.disk_detach(n) for n in names) if d]
        return gone[0] if gone else None

    def netns_exec(self, host: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        """Run a command in a lab host's network namespace (e.g. as the outsider)."""
        return run(["ip", "netns", "exec", self.state()["hosts"][host]["netns"], *cmd], **kw)

    def netns_argv(self, host: str, cmd: list[str]) -> list[str]:
        """A command line running `cmd` in a lab host's network namespace with this machine's files
        (e.g. the probe as a client outside both sites: `siaga probe run` from the outsider's network)."""
        return ["ip", "netns", "exec", self.state()["hosts"][host]["netns"], *cmd]


# --- networking ------------------------------------------------------------------------------

def _nft(script: str) -> None:
    run(["nft", "-f", "-"], input=script)


def _nft_table(st: dict) -> str:
    return f"siaga_lab_{st['prefix']}"


def _resolver() -> str:
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and ":" not in parts[1]:
            return parts[1]
    raise LabError("no IPv4 nameserver in /etc/resolv.conf; the lab hosts need one for apt")


def _mirror_addresses() -> set[str]:
    """The only addresses outside the lab that its hosts may reach: Debian's mirror (for apt)."""
    hosts = {re.sub(r"^https?://([^/]+).*$", r"\1", m) for m in (MIRROR, SECURITY_MIRROR)}
    out = set()
    for name in hosts:
        with contextlib.suppress(OSError):
            out |= {ai[4][0] for ai in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}
    return out


def _taken_subnets() -> list[ipaddress.IPv4Network]:
    out = []
    for line in run(["ip", "-4", "route", "show", "table", "all"]).stdout.splitlines():
        with contextlib.suppress(ValueError):
            dest = line.split()[0]
            if dest not in ("default", "local", "broadcast", "unreachable", "blackhole", "prohibit"):
                out.append(ipaddress.ip_network(dest, strict=False))
            elif dest in ("local", "broadcast"):
                out.append(ipaddress.ip_network(line.split()[1], strict=False))
    return out


def _free_index() -> int:
    claimed = {s.get("index") for s in _all_states()}
    taken = _taken_subnets()
    for index in range(MAX_LABS):
        block = ipaddress.ip_network(f"{NET_BASE.network_address + index * 4 * 256}/22")
        if index in claimed or any(block.overlaps(t) for t in taken):
            continue
        if any(dns_block(index).overlaps(t) for t in taken):
            continue
        if any(Path(f"/sys/class/net/sg{index:02d}{s}").exists() for s in "abowd"):
            continue
        return index
    raise LabError(f"no free lab subnet in {NET_BASE}: take other labs down (siaga lab down)")


def _net_up(st: dict) -> None:
    """Bridges, the office address, forwarding and the lab's own nft table on this machine."""
    p = st["prefix"]
    office = f"{p}w"
    if not Path(f"/sys/class/net/{office}").exists():
        run(["ip", "link", "add", office, "type", "bridge"])  # no dummy module here; a portless bridge holds the address
    run(["ip", "addr", "replace", f"{st['admin_address']}/32", "dev", office])
    run(["ip", "link", "set", office, "up"])
    for seg in st["segments"].values():
        br = seg["bridge"]
        if not Path(f"/sys/class/net/{br}").exists():
            run(["ip", "link", "add", br, "type", "bridge"])
        run(["ip", "addr", "replace", f"{seg['gateway']}/24", "dev", br, "noprefixroute"])
        run(["ip", "link", "set", br, "up"])
        # Traffic from this machine to the lab leaves from the office address: the admin workstation.
        run(["ip", "route", "replace", seg["subnet"], "dev", br, "src", st["admin_address"]])
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    bridges = ", ".join(f'"{s["bridge"]}"' for s in st["segments"].values())
    subnets = ", ".join(s["subnet"] for s in st["segments"].values())
    mirrors = ", ".join(st["mirrors"]) or "127.255.255.255"
    table = _nft_table(st)
    _nft(f"""
table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    chain wan {{
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname {{ {bridges} }} oifname {{ {bridges} }} jump wan
        iifname {{ {bridges} }} oifname {{ {bridges} }} accept
        oifname {{ {bridges} }} ct state established,related accept
        iifname {{ {bridges} }} ip daddr {{ {mirrors} }} tcp dport {{ 80, 443 }} accept
        iifname {{ {bridges} }} ip daddr {st['resolver']} meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname {{ {bridges} }} drop
        oifname {{ {bridges} }} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {{ {subnets} }} oifname != {{ {bridges} }} masquerade
    }}
}}
""")


def _raise_inotify_limit(minimum: int = 1024) -> None:
    """Each booted host's systemd takes inotify instances from this machine's per-user limit
    (128 by default): with several labs up, new hosts fail to boot. Raise it, never lower it."""
    knob = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(knob.read_text()) < minimum:
        knob.write_text(f"{minimum}\n")


def _host_net_up(st: dict, host: str) -> None:
    d = st["hosts"][host]
    seg = st["segments"][str(d["segment"])]
    ns, veth = d["netns"], d["veth"]
    if not Path(f"/run/netns/{ns}").exists():
        run(["ip", "netns", "add", ns])
    if not Path(f"/sys/class/net/{veth}").exists():
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", seg["bridge"], "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{d['address']}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "route", "replace", "default", "via", seg["gateway"]])


def _host_net_down(st: dict, host: str) -> None:
    d = st["hosts"][host]
    run(["ip", "link", "del", d["veth"]], check=False)
    run(["ip", "netns", "del", d["netns"]], check=False)


def _stop_machine(d: dict, kill: bool) -> None:
    pid, start = d.get("pid"), d.get("start_time")
    if kill and d.get("cgroup"):
        # A site loss: every process of the machine dies at once. SIGKILL to nspawn alone would leave
        # the container's own processes (its init, sshd, PostgreSQL) running in its cgroup.
        _kill_cgroup(d["cgroup"])
    if _alive(pid, start):
        # SIGTERM makes nspawn power the container off in order; SIGKILL is a site loss.
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        with contextlib.suppress(LabError):
            wait_for("the lab host to stop", lambda: not _alive(pid, start), STOP_DEADLINE_S)
        if _alive(pid, start):
            os.killpg(pid, signal.SIGKILL)
            wait_for("the lab host to die", lambda: not _alive(pid, start), 10)
    d["pid"] = d["start_time"] = None
    if d.get("cgroup"):
        _remove_cgroup(d.pop("cgroup"))


# --- cgroups ------------------------------------------------------------------------------------
# systemd-nspawn --keep-unit --register=no makes no scope: it puts the container's systemd in
# <its own cgroup>/payload and itself in <its own cgroup>/supervisor. Started in this machine's root
# cgroup, every lab host of every lab shared one /payload tree: each host's systemd managed the same
# system.slice/apache2.service, postgresql@..., read the other hosts' processes there as pid 0 and
# failed with "Failed to kill control group ...: Input/output error", losing track of the unit's
# processes. So each host gets a cgroup of its own, in every hierarchy that tracks processes for
# systemd (cgroup2, and the name=systemd one of a hybrid setup), and nspawn delegates below it.
CGROUP_FS = Path("/sys/fs/cgroup")
CGROUP_PARENT = "siaga-lab"


def _machine_cgroup(st: dict, host: str) -> str:
    return f"{CGROUP_PARENT}/{st['prefix']}-{host}"


def _cgroup_hierarchies() -> list[Path]:
    """Mount points of the hierarchies systemd tracks processes in (unified, hybrid or legacy)."""
    if (CGROUP_FS / "cgroup.procs").exists() and not (CGROUP_FS / "unified").is_dir():
        return [CGROUP_FS]  # cgroup2 only
    return [CGROUP_FS / sub for sub in ("unified", "systemd") if (CGROUP_FS / sub / "cgroup.procs").exists()]


def _machine_cgroups(rel: str) -> list[Path]:
    """The machine's cgroup directories, made if missing."""
    dirs = [top / rel for top in _cgroup_hierarchies()]
    if not dirs:
        raise LabError(f"no cgroup hierarchy for systemd under {CGROUP_FS}")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _cgroup_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_hierarchies():
        for dirpath, _dirs, files in os.walk(top / rel):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids |= {int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return pids


def _kill_cgroup(rel: str) -> None:
    """SIGKILL every process of a machine's cgroup (cgroup.kill where the kernel has it), and wait."""
    for top in _cgroup_hierarchies():
        knob = top / rel / "cgroup.kill"
        if knob.exists():
            with contextlib.suppress(OSError):
                knob.write_text("1")
    for p in _cgroup_pids(rel):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    wait_for("the machine's processes to die", lambda: not _cgroup_pids(rel), STOP_DEADLINE_S)


def _remove_cgroup(rel: str) -> None:
    """Remove a stopped machine's cgroup subtree (its directories hold no processes any more)."""
    for top in _cgroup_hierarchies():
        if not (top / rel).is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(top / rel, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _disks_down(st: dict, names: list[str] | None = None) -> None:
    """Lab disks unmounted from their host (if running) and their loop devices freed."""
    disks = st.get("disks") or {}
    for name in list(disks) if names is None else names:
        m = disks.get(name)
        if m:
            d = st.get("hosts", {}).get(m["host"], {})
            leader = container_leader(d["pid"]) if _alive(d.get("pid"), d.get("start_time")) else None
            if leader:
                mp = shlex.quote(m["mount_point"])
                run(["nsenter", "-t", str(leader), "-m", "--", "sh", "-c",
                     f"umount {mp} 2>/dev/null || umount -l {mp} 2>/dev/null; rm -f {m['node']}"], check=False)
        img = str(LABS_ROOT / st["name"] / "disks" / f"{name}.img")
        for loop in _loops_of(lambda back: back in (img, f"{img} (deleted)")):
            run(["losetup", "-d", loop], check=False)
        disks.pop(name, None)
    if names is None:  # whatever image of this lab is still on a loop device
        prefix = f"{LABS_ROOT / st['name']}/disks/"
        for loop in _loops_of(lambda back: back.startswith(prefix)):
            run(["losetup", "-d", loop], check=False)


def _loops_of(match: Callable[[str], bool]) -> list[str]:
    out = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], check=False).stdout
    return [ln.split(None, 1)[0] for ln in out.splitlines() if len(ln.split(None, 1)) == 2 and match(ln.split(None, 1)[1].strip())]


def teardown(st: dict, log: Callable[[str], None] = print) -> None:
    """Remove every object a lab created. Safe to run on a half-made or long-dead lab."""
    lab_dir = LABS_ROOT / st["name"]
    _disks_down(st)
    for host, d in st.get("hosts", {}).items():
        _stop_machine(d, kill=False)
        _host_net_down(st, host)
        root = lab_dir / "machines" / host / "root"
        if os.path.ismount(root):
            run(["umount", str(root)], check=False)
        if os.path.ismount(root):  # something still holds it: detach now, freed when released
            run(["umount", "-l", str(root)], check=False)
    for seg in st.get("segments", {}).values():
        run(["ip", "link", "del", seg["bridge"]], check=False)
    run(["ip", "link", "del", f"{st['prefix']}w"], check=False)
    run(["nft", "delete", "table", "inet", _nft_table(st)], check=False)


def _all_states() -> list[dict]:
    out = []
    for f in LABS_ROOT.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(f.read_text()))
    return out


def sweep_leftovers(log: Callable[[str], None] = print) -> None:
    """Clean labs whose machines are all dead (a killed run leaves kernel objects and mounts)."""
    for st in _all_states():
        hosts = st.get("hosts", {})
        if any(_alive(d.get("pid"), d.get("start_time")) for d in hosts.values()):
            continue
        log(f"lab {st['name']}: cleaning leftovers of a run that was killed ({st['prefix']})")
        teardown(st, log)
        shutil.rmtree(LABS_ROOT / st["name"], ignore_errors=True)
    # Kernel objects with a lab prefix that no state file claims any more.
    claimed = {s["prefix"] for s in _all_states()}
    names = {s["name"] for s in _all_states()}
    for loop in _loops_of(lambda back: back.startswith(f"{LABS_ROOT}/") and back.split("/")[len(LABS_ROOT.parts)] not in names):
        run(["losetup", "-d", loop], check=False)
    for link in Path("/sys/class/net").iterdir():
        m = re.match(r"^(sg\d\d)(a|b|o|w|d|-.+)$", link.name)
        if m and m.group(1) not in claimed:
            run(["ip", "link", "del", link.name], check=False)
    for top in _cgroup_hierarchies():
        for cg in (top / CGROUP_PARENT).glob("sg[0-9][0-9]-*"):
            if cg.name[:4] not in claimed:
                _remove_cgroup(f"{CGROUP_PARENT}/{cg.name}")
    for ns in Path("/run/netns").glob("sg[0-9][0-9]-*") if Path("/run/netns").exists() else []:
        if ns.name[:4] not in claimed:
            run(["ip", "netns", "del", ns.name], check=False)
    for line in run(["nft", "list", "tables"], check=False).stdout.splitlines():
        m = re.match(r"^table inet siaga_lab_(sg\d\d)$", line.strip())
        if m and m.group(1) not in claimed:
            run(["nft", "delete", "table", "inet", f"siaga_lab_{m.group(1)}"], check=False)


def print_status(lab: Lab, console) -> bool:
    """Table of the lab's hosts; True when every host is running and answers SSH."""
    from rich.table import Table

    st = lab.state()
    if st is None:
        console.print(f"lab {lab.name}: not up")
        return False
    table = Table(title=f"lab {lab.name} ({st['prefix']}, admin workstation {st['admin_address']}, WAN {'CUT' if st.get('wan_cut') else 'up'})")
    for col in ("host", "site", "address", "machine", "ssh"):
        table.add_column(col)
    ok = True
    running = lab.running_hosts()
    for name, d in st["hosts"].items():
        up = name in running
        ssh = up and run(lab.ssh_cmd(name) + ["true"], check=False, timeout=10).returncode == 0
        ok &= up and (ssh or name == "outsider")
        table.add_row(name, d["site"], d["address"], "running" if up else "[red]stopped[/red]",
                      "ok" if ssh else "[yellow]no[/yellow]")
    console.print(table)
    console.print(f"site file: {lab.site_file}")
    return ok
