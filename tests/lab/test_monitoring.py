"""Monitoring on the real lab (roles/monitoring; SOP IN-3, IN-4, BK-3): each site's Prometheus
scrapes both sites and the outsider is refused; the app stopped on the active site is mailed (the
lab's real SMTP server on the outsider, read from its Maildir) and posted to the webhook; a site
cut off is alerted by the other site's Alertmanager; the backup-age figure is the real last backup.

The lab's site file sets short intervals (drc/lab/alerts.py): 3 s scrapes, `down_for_s: 8`."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from datetime import datetime

import pytest

from drc.lab import alerts
from drc.site import load_site
from roles.monitoring.defaults import PORTS
from tests.helpers import lab_host, tcp_from

UP_DEADLINE_S = 90.0
ALERT_DEADLINE_S = 60.0  # down_for_s 8 s + 3 s scrapes + 2 s evaluations + group_wait 2 s, with room for a busy machine
HEAL_DEADLINE_S = 120.0


def poll(what: str, check, deadline_s: float, interval_s: float = 0.5):
    start = time.monotonic()
    while True:
        got = check()
        if got:
            return got, time.monotonic() - start
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def query(lab, host: str, expr: str) -> list[dict]:
    """Prometheus's HTTP API on a lab server, from the admin workstation (the firewall lets it)."""
    url = f"http://{lab.address(host)}:{PORTS['prometheus']}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def values(lab, host: str, expr: str) -> dict[str, float]:
    """host label -> value of each series of `expr` on `host`'s Prometheus ({} when unreachable)."""
    try:
        return {s["metric"].get("host", ""): float(s["value"][1]) for s in query(lab, host, expr)}
    except OSError:
        return {}


def mail_summaries(lab) -> list[str]:
    return [str(m["Subject"]) for m in alerts.mails(lab)]


def new_mail(lab, before: int, *words: str):
    """Subjects of mails delivered since `before` mails that contain every word."""
    def check():
        return [s for s in mail_summaries(lab)[before:] if all(w in s for w in words)]
    return check


@pytest.fixture(scope="module")
def site(lab, deployed):
    return load_site(lab.site_file)


@pytest.fixture(scope="module")
def watching(lab, site):
    """Both Prometheus servers see every server of both sites (node, postgres) and the public service."""
    servers = set(site.site_of)

    def all_up():
        return all(set(values(lab, h, 'up{job=~"node|postgres"} == 1')) == servers
                   and values(lab, h, 'probe_success{job="https"} == 1') for h in servers)

    _, took = poll("both Prometheus servers to scrape every server and probe the public service", all_up, UP_DEADLINE_S)
    print(f"every target up on both sites after {took:.1f}s")
    return servers


def active_host(site) -> str:
    return site.hosts_in(site.active_site)[0]


def test_the_monitoring_deploy_changes_nothing_the_second_time(lab, watching):
    """Idempotent, and its --dry preview too (the config files' checks and restarts only on change)."""
    from tests.helpers import assert_no_change_rerun

    assert_no_change_rerun(lab, "deploys/monitoring.py")


def test_each_site_scrapes_both_and_the_outsider_is_refused(lab, site, watching):
    for h in watching:
        peer = next(p for p in watching if p != h)
        for port in (PORTS["node"], PORTS["postgres"], PORTS["alertmanager"], PORTS["prometheus"]):
            assert tcp_from(lab, peer, lab.address(h), port) == "open", (peer, h, port)
            assert tcp_from(lab, "outsider", lab.address(h), port, timeout=0.5) != "open", (h, port)
    # siaga's figures reach Prometheus (polled: a figure is refreshed every figures_interval_s, and
    # psql may time out once on a loaded machine): both hosts' figures read, one primary, one standby.
    def figures_in():
        return all(values(lab, h, "siaga_figures_ok") == {p: 1.0 for p in watching} for h in watching) and \
            sorted(values(lab, active_host(site), "siaga_pg_in_recovery").values()) == [0.0, 1.0]

    poll("siaga's figures from both hosts, a primary and a standby", figures_in, 30)
    # The recorded lag follows at the next rule evaluation after both figures are in (polled: before
    # it, the rule saw no primary's position and recorded nothing).
    poll("the replication lag recorded", lambda: values(lab, active_host(site), "siaga:replication_lag_bytes >= 0"),
         2 * site.monitoring.evaluation_interval_s + 30)
    # The uploads lag (EM-3): the source's heartbeat, copied by lsyncd, reaches the standby within
    # the threshold; only the receiving host has the figure.
    standby = next(h for h in watching if h != active_host(site))
    limit = site.status.max_lag_seconds + site.monitoring.figures_interval_s
    lag, _ = poll("the uploads heartbeat at the standby", lambda: (v := values(lab, active_host(site), "siaga:uploads_lag_seconds"))
                  and set(v) == {standby} and v, 60)
    assert 0 <= lag[standby] <= limit, (lag, limit)
    # AIDE's figures, written root-only by roles/file_integrity, copied for the exporter (IN-4).
    if site.file_integrity.enabled:
        for h in watching:
            assert set(values(lab, h, "siaga_integrity_unexplained_changes")) == watching


def test_app_down_is_mailed_and_posted_then_resolved(lab, site, watching):
    host = active_host(site)
    app = lab_host(lab, host)
    mails_before, posts_before = len(alerts.mails(lab)), len(alerts.webhook_posts(lab))
    start = time.monotonic()
    app.run_expect([0], f"sudo systemctl stop {site.spse_app.unit}")
    try:
        got, _ = poll("an AppDown mail", new_mail(lab, mails_before, "[FIRING", "AppDown", host), ALERT_DEADLINE_S)
        took = time.monotonic() - start
        posts = alerts.webhook_posts(lab)[posts_before:]
        assert any(p["status"] == "firing" and p["groupLabels"] == {"alertname": "AppDown", "host": host} for p in posts), posts
    finally:
        app.run_expect([0], f"sudo systemctl start {site.spse_app.unit}")
    mail = next(m for m in alerts.mails(lab)[mails_before:] if "AppDown" in str(m["Subject"]))
    assert mail["To"] == alerts.MAIL_TO and "siaga@lab.example" in mail["From"]
    poll("the AppDown resolved mail", new_mail(lab, mails_before, "[RESOLVED]", "AppDown", host), ALERT_DEADLINE_S)
    firing = len(new_mail(lab, mails_before, "[FIRING", "AppDown", host)())
    print(f"app stopped on {host}: mail after {took:.1f}s ({firing} FIRING mail(s) for the outage), resolved after the restart")


def test_a_site_cut_off_is_alerted_by_the_other_site(lab, site, watching):
    """The WAN between the sites cut (each site loses the other): each site's Alertmanager mails and
    posts that the other site's server is down. Healed, both see everything again and the standby
    streams again before the next test."""
    mails_before, posts_before = len(alerts.mails(lab)), len(alerts.webhook_posts(lab))
    a, b = site.hosts_in("primary")[0], site.hosts_in("drc")[0]
    start = time.monotonic()
    lab.set_wan(cut=True)
    try:
        def from_other_site():
            seen = {(p["groupLabels"].get("host"), p["externalURL"]) for p in alerts.webhook_posts(lab)[posts_before:]
                    if p["status"] == "firing" and p["groupLabels"].get("alertname") == "HostDown"}
            return seen if {(a, f"http://{b}:9093"), (b, f"http://{a}:9093")} <= seen else None

        seen, _ = poll("HostDown of each site from the other's Alertmanager", from_other_site, ALERT_DEADLINE_S)
        took = time.monotonic() - start
        poll("the HostDown mails", lambda: new_mail(lab, mails_before, "HostDown", a)() and new_mail(lab, mails_before, "HostDown", b)(),
             ALERT_DEADLINE_S)
    finally:
        lab.set_wan(cut=False)
    print(f"WAN cut: HostDown from the other site's Alertmanager after {took:.1f}s: {sorted(seen)}")

    def healed():
        return (all(set(values(lab, h, 'up{job="node"} == 1')) == watching for h in watching)
                and values(lab, a, "siaga_pg_wal_receiver_streaming == 1"))

    _, took = poll("both sites to see each other and the standby to stream again", healed, HEAL_DEADLINE_S)
    print(f"healed: every target up and the standby streaming {took:.1f}s after the heal")


def test_the_backup_age_figure_is_the_real_last_backup(lab, site, watching):
    """A database backup run on the repository host: Prometheus's figure becomes that run's end (BK-3)."""
    repo = site.hosts_in(site.backup.repository_site)[0]
    h = lab_host(lab, repo)
    h.run_expect([0], "sudo /usr/local/sbin/siaga-backup run db --type incr --trigger manual --by monitoring-test")
    read = json.loads(h.check_output("sudo /usr/local/lib/siaga/backup-read"))
    last = max(r["end"] for r in read["records"] if r["set"] == "db" and r["result"] == "success")
    want = datetime.fromisoformat(last).timestamp()
    expr = f'siaga_backup_last_success_timestamp_seconds{{set="db",host="{repo}"}}'
    for prom in watching:  # both sites' Prometheus
        _, took = poll(f"{prom}'s Prometheus to show the backup that ended {last}",
                       lambda: values(lab, prom, expr).get(repo) == want, 30)
    age = values(lab, active_host(site), f"time() - {expr}")[repo]
    assert 0 <= age < 120, age
    print(f"db backup ended {last}: on both Prometheus servers within {took:.1f}s, age {age:.0f}s")


def test_the_capacity_report_renders_from_the_sites_prometheus(lab, site, watching, tmp_path):
    """An upload written on the active site shows in siaga's uploads figure; `siaga report capacity`
    then renders every server's disk, memory, database and uploads from Prometheus (SOP IN-3)."""
    import subprocess
    import sys

    from tests.helpers import REPO

    host, uploads = active_host(site), site.spse_app.uploads_dir
    app = lab_host(lab, host)
    test_file = f"{uploads}/siaga-monitoring-capacity.bin"
    app.run_expect([0], f"sudo dd if=/dev/urandom of={test_file} bs=1M count=2 status=none && sudo chown --reference={uploads} {test_file}")
    try:
        # What the uploads hold now, read on the host: the figure must come to exactly that.
        on_disk = sum(int(n) for n in app.check_output(f"sudo find {uploads} -type f -printf '%s\\n'").split())
        assert on_disk >= 2 * 1024 * 1024
        _, took = poll("the uploads figure to count the new upload",
                       lambda: values(lab, host, "siaga_uploads_bytes").get(host) == on_disk,
                       site.monitoring.uploads_every_s + 3 * site.monitoring.figures_interval_s + 10)
        proc = subprocess.run([sys.executable, "-m", "drc.cli", "report", "capacity", str(lab.site_file), "--days", "0.1",
                               "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        app.run_expect([0], f"sudo rm -f {test_file}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [report] = tmp_path.glob("laporan-kapasitas-*.html")
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 4 and "LAPORAN KAPASITAS SERVER" in html
    for h in watching:
        assert f"<td>{h}</td><td>/</td>" in html, h  # every server's root filesystem
    assert site.postgresql.database in html
    assert "belum ada data" not in html  # every section has real figures
    print(f"upload seen in the figures after {took:.1f}s; capacity report {report.stat().st_size} bytes")


def http_from(lab, host: str, url: str, method: str = "GET", body: bool = False):
    """An HTTP request from inside a lab host's network namespace: the status code (with `body`:
    (code, body)), or 'unreachable'."""
    import sys

    code = (
        "import urllib.request, urllib.error\n"
        f"req = urllib.request.Request({url!r}, method={method!r}, data=b'' if {method!r} == 'POST' else None)\n"
        "try: r = urllib.request.urlopen(req, timeout=2); print(r.status); print(r.read(200).decode())\n"
        "except urllib.error.HTTPError as e: print(e.code); print(e.read(200).decode())\n"
        "except OSError: print('unreachable')\n"
    )
    out = lab.netns_exec(host, [sys.executable, "-c", code]).stdout.strip()
    status, _, text = out.partition("\n")
    status = int(status) if status.isdigit() else status
    return (status, text) if body else status


def test_lkpp_reads_prometheus_and_nothing_more(lab, site, watching, tmp_path):
    """SOP IN-3: LKPP's monitoring (here the outsider's address in monitoring.lkpp_sources) reads
    Prometheus's API; its admin and lifecycle APIs stay closed and no other monitoring port opens.
    The lab's own firewall is put back afterwards."""
    import yaml

    from tests.helpers import run_deploy

    data = yaml.safe_load(lab.site_file.read_text())
    data["monitoring"]["lkpp_sources"] = [f"{lab.address('outsider')}/32"]
    with_lkpp = tmp_path / "site.yaml"
    with_lkpp.write_text(yaml.safe_dump(data, sort_keys=False))
    h = active_host(site)
    base = f"http://{lab.address(h)}:{PORTS['prometheus']}"
    assert http_from(lab, "outsider", f"{base}/api/v1/query?query=up") == "unreachable"
    start = time.monotonic()
    result = run_deploy(lab, "deploys/remote_access.py", site_file=with_lkpp)
    try:
        assert result.ok, result.output[-3000:]
        assert http_from(lab, "outsider", f"{base}/api/v1/query?query=up") == 200
        # Reached, and refused by Prometheus itself: its admin and lifecycle APIs are off.
        admin, said = http_from(lab, "outsider", f"{base}/api/v1/admin/tsdb/snapshot", "POST", body=True)
        assert admin != 200 and "admin APIs disabled" in said, (admin, said)
        lifecycle, said = http_from(lab, "outsider", f"{base}/-/reload", "POST", body=True)
        assert lifecycle != 200 and "Lifecycle API is not enabled" in said, (lifecycle, said)
        assert tcp_from(lab, "outsider", lab.address(h), PORTS["node"], timeout=0.5) != "open"
        assert tcp_from(lab, "outsider", lab.address(h), PORTS["alertmanager"], timeout=0.5) != "open"
    finally:
        back = run_deploy(lab, "deploys/remote_access.py")
        assert back.ok, back.output[-3000:]
    assert http_from(lab, "outsider", f"{base}/api/v1/query?query=up") == "unreachable"
    print(f"LKPP's read-only access opened (admin API {admin}, lifecycle {lifecycle}), checked and closed again "
          f"in {time.monotonic() - start:.1f}s")


def test_the_restore_test_figures_follow_the_workstations_records(lab, site, watching):
    """`siaga backup restore-test` on the workstation, its records pushed to the DRC's copy when the
    command ends: the DRC host's figures say whether it passed and, if so, when (SOP BK-4)."""
    import subprocess
    import sys

    from drc.workstation.mirror import mirror_hosts
    from tests.helpers import REPO

    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "restore-test", str(lab.site_file)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    records = load_site(lab.site_file).records_dir or lab.dir / "records"
    last = json.loads((records / "restore-tests.jsonl").read_text().splitlines()[-1])
    ok = 1.0 if last["result"] == "success" else 0.0
    drc_host = mirror_hosts(site)[0]  # where the workstation's copy lives

    def shown():
        got = values(lab, drc_host, "siaga_restore_test_last_ok")
        when = values(lab, drc_host, "siaga_restore_test_last_success_timestamp_seconds").get(drc_host)
        return got.get(drc_host) == ok and (not ok or when == datetime.fromisoformat(last["end"]).timestamp())

    _, took = poll("the DRC's figures to show the restore test just recorded", shown, 60)
    print(f"restore test {last['result']} (ended {last['end']}): in the DRC's figures after {took:.1f}s")
