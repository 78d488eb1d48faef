"""The lab itself: real hosts, isolated networks, a WAN that can be cut, leftovers swept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from drc.lab import lab as labmod
from tests.helpers import lab_host, tcp_from


def test_hosts_run_systemd_and_are_distinct(lab):
    ids = set()
    for name in ("primary", "drc", "outsider"):
        host = lab_host(lab, name)
        assert host.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
        assert host.interface("eth0").addresses[0] == lab.address(name)
        ids.add(host.file("/etc/machine-id").content_string.strip())
    assert len(ids) == 3


def test_each_host_has_its_own_cgroup_tree(lab):
    """nspawn (no scope) delegates below its own cgroup. Hosts that share one run their units in the
    same cgroups: each systemd reads the other hosts' processes there as pid 0, fails to kill the
    unit's cgroup (EIO) and loses Apache's main process; a failed PostgreSQL start never ends."""
    st = lab.state()
    for name, d in st["hosts"].items():
        lines = Path(f"/proc/{labmod.container_leader(d['pid'])}/cgroup").read_text().splitlines()
        unified = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        assert unified.startswith(f"/{labmod.CGROUP_PARENT}/{st['prefix']}-{name}/payload/"), unified
        # Inside the host no cgroup lists a process of another host (shown as pid 0).
        host = lab_host(lab, name)
        foreign = host.run("find /sys/fs/cgroup -name cgroup.procs -exec grep -lx 0 {} +")
        assert foreign.stdout.strip() == "", foreign.stdout


def test_admin_workstation_address_is_what_hosts_see(lab):
    host = lab_host(lab, "drc", sudo=False)
    assert host.run("echo $SSH_CLIENT").stdout.split()[0] == lab.state()["admin_address"]


def test_wan_cut_partitions_sites_but_admin_reaches_both(lab):
    # Port 5432 passes the hosts' firewalls between sites (deployed or not): 'open' or 'refused'.
    primary_addr, drc_addr = lab.address("primary"), lab.address("drc")
    assert tcp_from(lab, "primary", drc_addr, 5432) != "timeout"
    lab.set_wan(cut=True)
    try:
        assert tcp_from(lab, "primary", drc_addr, 5432) == "timeout"
        assert tcp_from(lab, "drc", primary_addr, 5432) == "timeout"
        for name in ("primary", "drc"):
            assert subprocess.run(lab.ssh_cmd(name) + ["true"], timeout=20).returncode == 0
    finally:
        lab.set_wan(cut=False)
    assert tcp_from(lab, "primary", drc_addr, 5432) != "timeout"


def test_hosts_reach_nothing_outside_the_lab_but_the_mirror(lab):
    # 198.51.100.0/24 is a documentation range: the lab host's forward chain drops it locally.
    assert tcp_from(lab, "primary", "198.51.100.7", 443) == "timeout"
    mirrors = lab.state()["mirrors"]
    assert mirrors, "the mirror must resolve for apt to work"
    assert tcp_from(lab, "primary", mirrors[0], 80, timeout=10) == "open"


def test_leftovers_of_a_killed_lab_are_swept(lab):
    """A killed run leaves bridges, namespaces and a state file: the next `up` removes them."""
    index = labmod._free_index()
    prefix = f"sg{index:02d}"
    st = {"name": "killed-run", "index": index, "prefix": prefix, "admin_address": "0.0.0.0",
          "segments": {"1": {"bridge": f"{prefix}a"}},
          "hosts": {"primary": {"netns": f"{prefix}-primary", "veth": f"{prefix}-primary", "pid": 999999999, "start_time": 1}}}
    d = labmod.LABS_ROOT / "killed-run"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps(st))
    subprocess.run(["ip", "link", "add", f"{prefix}a", "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", f"{prefix}-primary"], check=True)
    subprocess.run(["ip", "netns", "add", f"{prefix}-orphan"], check=True)  # no state claims it
    cgroups = labmod._machine_cgroups(f"{labmod.CGROUP_PARENT}/{prefix}-primary")
    (cgroups[0] / "payload" / "init.scope").mkdir(parents=True)  # what a killed host's systemd left
    try:
        labmod.sweep_leftovers(log=lambda _m: None)
        links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"{prefix}a " not in links
        assert prefix not in netns
        assert not d.exists()
        assert not any(c.exists() for c in cgroups)
        assert lab.running_hosts() == ["primary", "drc", "outsider", "dns"]  # a live lab is never swept
    finally:
        subprocess.run(["ip", "link", "del", f"{prefix}a"], capture_output=True)
        for ns in ("primary", "orphan"):
            subprocess.run(["ip", "netns", "del", f"{prefix}-{ns}"], capture_output=True)
