"""The traffic switch, TLS for the public name, the probe and the watcher on the real lab (issue 10
points 4-6): the lab's Knot DNS (ns1 and its secondary ns2, outside both sites) serves the public
name with the active site's address and the site file's TTL; a TSIG-signed update moves it and
each server is asked; an unsigned, wrongly signed or stale update is refused and changes nothing;
both sites serve a certificate for the public name that the outsider verifies against the lab CA;
the probe (in the outsider's network) writes for ~10 s and every acknowledged write is found, with
no gap near a second; the watcher sees one writable primary. SOP EM-2 step 6, EM-3."""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import time

import dns.rcode
import dns.tsig
import pytest

from drc.lab import dns as lab_dns
from drc.lab.probing import ProbeRun
from drc.probe.writer import read_log
from drc.site import load_site
from drc.traffic import current, switch
from drc.traffic.dns import TrafficError, ask, build_update, read_key, send_update
from tests.helpers import REPO


@pytest.fixture(scope="module")
def site(lab):
    return load_site(lab.site_file)


def answers(site) -> list[tuple[tuple[str, ...], int | None]]:
    return [(a.addresses, a.ttl) for a in current(site)]


def test_knot_serves_the_public_name_at_the_active_site_with_the_ttl(lab, site):
    t = site.traffic
    active = str(t.addresses[site.active_site])
    assert [str(s) for s in t.dns_update.servers] == list(lab_dns.addresses(lab.state()))
    assert answers(site) == [((active,), t.ttl)] * 2  # the TTL the site file sets
    # The outsider resolves through it (its resolv.conf names ns1 and ns2 first).
    out = lab.netns_exec("outsider", ["true"])  # the namespace exists
    assert out.returncode == 0
    got = subprocess.run(lab.ssh_cmd("outsider") + ["getent", "ahostsv4", t.public_name], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0 and got.stdout.split()[0] == active, got.stdout + got.stderr
    # The key is the lab's own, 0600, outside the repository.
    key = t.dns_update.key_file
    assert oct(key.stat().st_mode & 0o777) == "0o600" and REPO not in key.resolve().parents


def test_a_signed_update_moves_the_name_and_each_server_is_verified(site):
    t = site.traffic
    active, other = site.active_site, ("drc" if site.active_site == "primary" else "primary")
    try:
        res = switch(site, other, log=lambda _m: None)
        assert res.changed and res.old_address == str(t.addresses[active])
        assert [(a["addresses"], a["ttl"]) for a in res.answers] == [([str(t.addresses[other])], t.ttl)] * 2
        assert answers(site) == [((str(t.addresses[other]),), t.ttl)] * 2  # ns2 too, by NOTIFY and transfer
        again = switch(site, other, log=lambda _m: None)
        assert not again.changed  # idempotent: nothing sent
    finally:
        back = switch(site, active, log=lambda _m: None)
    assert back.changed and answers(site) == [((str(t.addresses[active]),), t.ttl)] * 2


def test_updates_without_the_key_with_a_wrong_key_or_a_stale_prerequisite_are_refused(site):
    t, u = site.traffic, site.traffic.dns_update
    active, other = (str(t.addresses[r]) for r in (site.active_site, "drc" if site.active_site == "primary" else "primary"))
    before = answers(site)
    unsigned = build_update(u.zone, t.public_name, t.ttl, other, active, None)
    assert send_update(u.primary, u.port, unsigned) in (dns.rcode.REFUSED, dns.rcode.NOTAUTH)
    wrong = dns.tsig.Key(u.key_name, base64.b64decode(base64.b64encode(b"\x01" * 32)), u.key_algorithm)
    with pytest.raises(TrafficError, match="refused the update's TSIG signature"):
        send_update(u.primary, u.port, build_update(u.zone, t.public_name, t.ttl, other, active, wrong))
    # Signed, but the name no longer points at the old address given: another run moved it first.
    stale = build_update(u.zone, t.public_name, t.ttl, other, other, read_key(u))
    assert send_update(u.primary, u.port, stale) == dns.rcode.NXRRSET
    assert answers(site) == before


HANDSHAKE = """import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2] or None)
for addr in sys.argv[3:]:
    try:
        with ctx.wrap_socket(socket.create_connection((addr, 443), 5), server_hostname=sys.argv[1]) as s:
            print(addr, 'ok', s.getpeercert()['subject'])
    except ssl.SSLCertVerificationError as e:
        print(addr, 'refused', e.verify_message)
"""


def handshakes(argv: list[str]) -> list[list[str]]:
    got = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    return [ln.split()[:2] for ln in got.stdout.splitlines()]


def test_both_sites_serve_the_public_name_certificate_that_the_outsider_verifies(lab, site, deployed):
    """The outsider, with its own trust store (the lab CA installed by `lab up`), verifies the
    active site's certificate for the public name, and refuses it for another name (verification
    really happens). The other site's web port is closed to the outside while it stands by, so its
    certificate is checked from its own network against the lab CA file."""
    t = site.traffic
    active = str(t.addresses[site.active_site])
    for name, want in ((t.public_name, "ok"), ("other.lab.example", "refused")):
        assert handshakes(lab.ssh_cmd("outsider") + ["python3", "-c", shlex.quote(HANDSHAKE), name, "''", active]) == [[active, want]]
    for role in ("primary", "drc"):
        host, address = site.hosts_in(role)[0], str(t.addresses[role])
        argv = lab.netns_argv(host, [sys.executable, "-c", HANDSHAKE, t.public_name, str(t.ca_file), address])
        assert handshakes(argv) == [[address, "ok"]]
        # The sites trust the lab CA as hosts trust a public CA (a switch-over's forward verifies with it).
        on_host = lab.ssh_cmd(host) + ["python3", "-c", shlex.quote(HANDSHAKE), t.public_name, "''", address]
        assert handshakes(on_host) == [[address, "ok"]]


def test_probe_baseline_every_acknowledged_write_kept_and_one_primary(lab, site, deployed, tmp_path):
    """No switch-over: ~10 s of writes every 100 ms from the outsider's network through the public
    name (HTTPS, certificate verified against the lab CA); check finds every acknowledged write
    (row and file) on the primary, no gap near a second; the watcher sees exactly one writable primary."""
    run = ProbeRun(lab, tmp_path, duration_s=10)
    with run:
        summary = run.wait(timeout_s=60)
    assert summary["acked"] >= 80 and summary["acked"] == summary["writes"], summary
    # Resolved again only when the answer's TTL had run out, as a caching resolver would.
    ttl = site.traffic.ttl
    resolved = [r["at"] for r in read_log(run.probe_log) if r.get("event") == "resolved"]
    assert summary["dns_lookups"] == len(resolved) and 1 <= len(resolved) <= 10 // ttl + 1
    assert all(b - a >= ttl - 0.01 for a, b in zip(resolved, resolved[1:])), resolved
    report = run.check()
    assert report["exit"] == 0, report
    print("probe baseline:", json.dumps({k: report[k] for k in ("acked", "verified", "rpo_writes", "rto_s", "addresses", "timelines")}),
          "watcher:", json.dumps(report["watcher"]))
    assert report["missing"] == [] and report["row_differs"] == [] and report["file_differs"] == []
    assert report["verified"] == report["acked"] == summary["acked"] and report["rpo_writes"] == 0
    assert report["rto_s"] < 1.0, report
    assert report["addresses"] == [str(site.traffic.addresses[site.active_site])] and len(report["timelines"]) == 1
    w = report["watcher"]
    assert w["split_brain_rounds"] == 0 and w["no_primary_rounds"] == 0 and w["unanswered_rounds"] == 0, w
    assert w["primaries"] == [site.hosts_in(site.active_site)[0]]
    # Each host's PostgreSQL answered a poll at least every 0.5 s.
    assert w["rounds"] >= 30 and all(0 < gap <= 0.5 for gap in w["longest_poll_gap_s"].values()), w
    assert run.watch_summary["split_brain_rounds"] == 0


def test_lab_up_again_keeps_the_zone_and_changes_nothing(lab, site):
    """`lab up` on a running lab rewrites no DNS file and keeps the record a switch set."""
    t = site.traffic
    root = lab.rootfs(lab_dns.DNS_HOST) / "root"
    files = [root / "etc/knot/knot.conf", root / "etc/knot/ns2.conf", root / "etc/systemd/system/knot-ns2.service"]
    before = [(f.stat().st_mtime_ns, f.read_text()) for f in files]
    other = "drc" if site.active_site == "primary" else "primary"
    try:
        switch(site, other, log=lambda _m: None)
        start = time.monotonic()
        lab.up(log=lambda _m: None)
        print(f"lab up on a running lab: {time.monotonic() - start:.1f}s")
        assert [(f.stat().st_mtime_ns, f.read_text()) for f in files] == before
        assert answers(site) == [((str(t.addresses[other]),), t.ttl)] * 2
    finally:
        switch(site, site.active_site, log=lambda _m: None)
    assert ask(str(t.dns_update.servers[0]), 53, t.public_name).addresses == (str(t.addresses[site.active_site]),)
