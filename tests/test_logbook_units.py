"""The remote-repair logbook without a lab: journal lines captured on a Debian 13 lab host
(OpenSSH 10, ulogd2) parsed into sessions and failed attempts, records, states, the report, the
allowlist labels and the firewall's log rule. SOP RA-5, RA-6."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drc.hostside import logbook_read
from drc.logbook import book
from drc.logbook.command import parse_note_text, report_context
from drc.records import store
from drc.records.render import render_report
from drc.site import SiteError, parse_site
from roles.firewall.ruleset import render_ruleset

DATA = Path(__file__).parent / "data"
BOOT = "0b477ac728764f3c8c700c65719aab7a"
# The lab's admins' public keys (their fingerprints are in the captured lines).
BUDI = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILoUQEe6B/1Wfa1e46m5pzsl4yOV+7jSQHFD33fYiNBM budi@siaga-lab"
SARI = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhcWwXldQujwVTGy0jESrqYItfSi3AyPyWlUj/LMqqx sari@siaga-lab"
TZ = ZoneInfo("Asia/Jakarta")


def captured() -> list[dict]:
    """`journalctl -o json` of the primary lab host (Debian 13): budi's four commands (siaga),
    sari's shell on a terminal, the outsider refused by the firewall (three SYNs), an unknown user
    and sari with a key that is not hers, all from the same 17 seconds."""
    return [json.loads(line) for line in (DATA / "logbook_journal_debian13.jsonl").read_text().splitlines()]


def site_data(**over) -> dict:
    data = {
        "site": "lab", "admin_workstations": ["10.213.12.1/32"],
        "ssh_allowlist": [{"network": "10.213.12.0/24", "label": "Kantor LPSE"}, "10.213.0.0/16",
                          {"network": "10.213.12.1/32", "label": "Laptop admin"}],
        "connection": {"user": "budi", "key_file": "/tmp/siaga-test/id_ed25519"},
        "admins": [{"name": "budi", "ssh_keys": [BUDI]}, {"name": "sari", "full_name": "Sari", "ssh_keys": [SARI]}],
        "sites": {"primary": {"label": "Data center utama", "networks": ["10.213.13.0/24"], "hosts": ["primary"]},
                  "drc": {"label": "DRC", "networks": ["10.213.14.0/24"], "hosts": ["drc"]}},
        "hosts": {"primary": {"address": "10.213.13.10"}, "drc": {"address": "10.213.14.10"}},
    }
    data.update(over)
    return data


def site(**over):
    return parse_site(site_data(**over), Path("lab.yaml"))


# --- the journal (drc/hostside/logbook_read.py) -----------------------------------------------------

def test_sessions_from_real_journal_lines():
    sessions, _ = logbook_read.assemble(captured(), BOOT)
    assert [(s["user"], s["port"]) for s in sessions] == [("budi", 52982), ("budi", 52996), ("budi", 53006),
                                                          ("sari", 55200), ("budi", 55218)]
    sari = sessions[3]
    assert sari["fingerprint"] == "SHA256:KYa4PEWLV/6CaMWv0LWU0OuDQ3/LeCgrFQlYwIm+Kj4" and sari["key_type"] == "ED25519"
    assert sari["channels"] == ["shell on pts/1"] and sari["ended"] == "closed"
    # The monitor's pam line (17:59:55.02) ends it, after the child's "Disconnected" (17:59:54).
    assert round(sari["end"] - sari["start"], 1) == 1.9
    assert all(s["channels"] == ["command"] for s in sessions if s["user"] == "budi")
    assert all(s["ended"] == "closed" for s in sessions)
    # Without its last lines (the disconnect and the monitor's pam close) the last one is still open.
    sessions, _ = logbook_read.assemble(captured()[:-3], BOOT)
    assert sessions[4]["ended"] is None and sessions[4]["end"] is None


def test_failed_attempts_from_real_journal_lines():
    _, failures = logbook_read.assemble(captured(), BOOT)
    by_source = {(f["address"], f["port"]): f for f in failures}
    assert set(by_source) == {("10.213.15.10", 55374), ("10.213.12.1", 55204), ("10.213.12.1", 55214)}
    refused = by_source[("10.213.15.10", 55374)]
    assert refused["kind"] == "refused by firewall" and refused["lines"] == 3 and refused["dport"] == 22 and refused["user"] is None
    assert by_source[("10.213.12.1", 55204)]["kind"] == "invalid user" and by_source[("10.213.12.1", 55204)]["user"] == "nosuchuser"
    wrong_key = by_source[("10.213.12.1", 55214)]
    assert wrong_key["kind"] == "failed publickey" and wrong_key["user"] == "sari"
    assert wrong_key["fingerprint"] == "SHA256:Wt8+lAAnwbJQ6SuysnwWMFpBPTGyTXmrAAlLeg47WJI"


def test_a_session_of_an_earlier_boot_that_never_closed_ended_with_it():
    lines = [e for e in captured() if "sari" not in logbook_read._text(e.get("MESSAGE")) or "Accepted publickey" in e["MESSAGE"]]
    sessions, _ = logbook_read.assemble(lines, "another-boot")
    sari = next(s for s in sessions if s["user"] == "sari")
    assert sari["ended"] == "boot" and sari["end"] is None and sari["channels"] == []
    sessions, _ = logbook_read.assemble(lines, BOOT)
    assert next(s for s in sessions if s["user"] == "sari")["ended"] is None


def test_debian12_captured_lines_parse_the_same():
    """Debian 12's OpenSSH 9.2 (identifier `sshd`), captured on a Debian 12 lab host: sari's shell,
    an unknown user, sari with a key that is not hers, the outsider refused (three SYNs)."""
    lines = [json.loads(ln) for ln in (DATA / "logbook_journal_debian12.jsonl").read_text().splitlines()]
    (s,), failures = logbook_read.assemble(lines, "af0d9a3e28b040529cb67f582d8e0064")
    assert (s["user"], s["port"], s["channels"], s["ended"]) == ("sari", 39840, ["shell on pts/1"], "closed")
    assert s["fingerprint"] == "SHA256:3V/EyCWbKNhycmu0fLIHg02WVOgKT0hFeD8QanKU43c"
    sari12 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINkwtkgK8YdG6qQ9J7WgVUpj2lvicLjaZu1zbhP2l4hO sari@siaga-lab"
    assert book.fingerprint(sari12) == s["fingerprint"]
    assert sorted((f["kind"], f["user"], f["lines"]) for f in failures) == [
        ("failed publickey", "sari", 2), ("invalid user", "nosuchuser", 2), ("refused by firewall", None, 3)]


def test_other_message_forms():
    """Forms the captures do not hold: a command on a terminal (`ssh -t host cmd`), too many attempts."""
    t = 1700000000_000000
    lines = [
        {"MESSAGE": "Accepted publickey for sari from 10.0.0.5 port 40000 ssh2: ED25519 SHA256:abc", "SYSLOG_PID": "900",
         "_BOOT_ID": "b", "__REALTIME_TIMESTAMP": str(t)},
        {"MESSAGE": "Starting session: command on pts/0 for sari from 10.0.0.5 port 40000 id 0", "SYSLOG_PID": "905",
         "_BOOT_ID": "b", "__REALTIME_TIMESTAMP": str(t + 1)},
        {"MESSAGE": "Disconnected from user sari 10.0.0.5 port 40000", "SYSLOG_PID": "905", "_BOOT_ID": "b",
         "__REALTIME_TIMESTAMP": str(t + 5_000_000)},
        {"MESSAGE": "maximum authentication attempts exceeded for invalid user admin from 10.0.0.9 port 41 ssh2 [preauth]",
         "SYSLOG_PID": "910", "_BOOT_ID": "b", "__REALTIME_TIMESTAMP": str(t + 6_000_000)},
    ]
    (s,), (f,) = logbook_read.assemble(lines, "b")
    assert s["channels"] == ["command on pts/0"] and s["ended"] == "closed" and s["end"] == 1700000005.0
    assert book.is_interactive(s["channels"])
    assert f["kind"] == "too many attempts" and f["user"] == "admin"


# --- records (drc/logbook/book.py) ----------------------------------------------------------------

def answer() -> dict:
    sessions, failures = logbook_read.assemble(captured(), BOOT)
    return {"boot_id": BOOT, "sessions": sessions, "failures": failures}


def test_session_records_name_the_admin_by_key_and_the_network_by_label():
    s = site()
    done, ongoing = book.session_records(s, "primary", answer(), TZ)
    assert len(done) == 5 and ongoing == []
    sari = next(r for r in done if r["user"] == "sari")
    assert sari["admin"] == "sari" and sari["kind"] == "manual" and sari["site_role"] == "primary"
    assert sari["network"] == "Laptop admin"  # the most specific entry holding 10.213.12.1
    assert sari["start"] == "2026-11-26T17:59:53+07:00" and sari["end"] == "2026-11-26T17:59:55+07:00"
    assert {r["kind"] for r in done if r["user"] == "budi"} == {"automated"}
    # The same answer gives the same ids: collecting again adds nothing.
    again, _ = book.session_records(s, "primary", answer(), TZ)
    assert [r["id"] for r in again] == [r["id"] for r in done]


def test_recollecting_appends_nothing_twice(tmp_path):
    s = site()
    done, _ = book.session_records(s, "primary", answer(), TZ)
    fails = book.failure_records(s, "primary", answer(), TZ)
    assert len(store.append_new(tmp_path / book.SESSIONS, done)) == 5
    assert len(store.append_new(tmp_path / book.FAILURES, fails)) == 3
    assert store.append_new(tmp_path / book.SESSIONS, done) == [] and store.append_new(tmp_path / book.FAILURES, fails) == []
    # A session still open is not written: a later collect writes it once it has ended.
    early, ongoing = book.session_records(s, "primary", {"sessions": logbook_read.assemble(captured()[:-3], BOOT)[0]}, TZ)
    assert len(early) == 4 and [r["port"] for r in ongoing] == [55218]


def test_an_unknown_key_is_not_taken_for_the_account_owner():
    a = answer()
    a["sessions"][3]["fingerprint"] = "SHA256:notakeyofanyadmin"
    done, _ = book.session_records(site(), "primary", a, TZ)
    assert next(r for r in done if r["user"] == "sari")["admin"] is None


def test_failure_records_name_the_network():
    fails = {f["address"]: f for f in book.failure_records(site(), "primary", answer(), TZ)}
    assert fails["10.213.15.10"]["network"] == "10.213.0.0/16"  # an unlabelled entry: its network
    s = site(ssh_allowlist=[{"network": "10.213.12.0/24", "label": "Kantor LPSE"}])
    fails = {f["address"]: f for f in book.failure_records(s, "primary", answer(), TZ)}
    assert fails["10.213.15.10"]["network"] == "di luar ssh_allowlist" and fails["10.213.12.1"]["network"] == "Kantor LPSE"
    assert book.network_of(s, "10.213.14.10") == "host drc (site drc)"


def test_states_open_overdue_closed_automated_and_groups():
    s = site()
    done, _ = book.session_records(s, "primary", answer(), TZ)
    sari = next(r for r in done if r["user"] == "sari")
    end = dt.datetime.fromisoformat(sari["end"])
    state = lambda notes, now: next(e for e in book.entries(s, done, notes, now) if e["id"] == sari["id"])["state"]
    assert state([], end + dt.timedelta(days=2)) == "open"
    assert state([], end + dt.timedelta(days=3, minutes=1)) == "overdue"  # analysis_due_days: 3
    assert book.entries(site(logbook={"analysis_due_days": 5}), done, [], end + dt.timedelta(days=4))[3]["state"] == "open"
    only_fault = [{"session": sari["id"], "fault": "web down", "analysis": "", "repair": "", "at": "2026-11-26T19:00:00+07:00"}]
    assert state(only_fault, end + dt.timedelta(days=9)) == "overdue"
    noted = only_fault + [{"session": sari["id"], "fault": "web down", "analysis": "disk full", "repair": "logs rotated",
                           "at": "2026-11-26T20:00:00+07:00"}]
    assert state(noted, end + dt.timedelta(days=9)) == "closed"
    rows = book.entries(s, done, [], end)
    assert [g["sessions"] for g in book.automated_groups(rows, TZ)] == [4]
    assert book.automated_groups(rows, TZ)[0]["networks"] == ["Laptop admin"]


def test_note_text_and_secrets():
    text = "# comment\n[fault]\nweb down\n[analysis]\ndisk full\n  by logs\n[repair]\nrotated\n"
    assert parse_note_text(text) == {"fault": "web down", "analysis": "disk full\n  by logs", "repair": "rotated"}
    assert book.secret_in("password: hunter2") and book.secret_in("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert book.secret_in("kata sandi = rahasia")
    assert book.secret_in("restarted postgresql after the password file check") is None


def test_monthly_report_has_the_sop_fields_and_the_session():
    s = site()
    done, _ = book.session_records(s, "primary", answer(), TZ)
    sari = next(r for r in done if r["user"] == "sari")
    notes = [{"session": sari["id"], "fault": "SPSE lambat", "analysis": "disk penuh oleh log", "repair": "log dirotasi",
              "at": "2026-11-26T19:00:00+07:00"}]
    fails = book.failure_records(s, "primary", answer(), TZ)
    ctx = report_context(s, done, fails, notes, 2026, 11, dt.datetime(2026, 11, 27, tzinfo=TZ))
    html = render_report("logbook_perbaikan_remote.html.j2", **ctx)
    for field in ("Lokasi", "Jaringan", "Tanggal", "Jam Mulai", "Jam Selesai", "Analisa Kerusakan", "Analisa Perbaikan"):
        assert f"<th>{field}</th>" in html, field
    assert "26-11-2026" in html and "17:59:53" in html and "17:59:55" in html and "Laptop admin (10.213.12.1)" in html
    assert "disk penuh oleh log" in html and "log dirotasi" in html and "Selesai" in html and "November 2026" in html
    assert "primary — Data center utama" in html
    assert "ditolak firewall" in html and "10.213.15.10" in html and "akun tidak dikenal" in html
    assert ctx["automated"][0]["sessions"] == 4
    assert report_context(s, done, fails, notes, 2026, 10, dt.datetime(2026, 11, 27, tzinfo=TZ))["manual"] == []


# --- the site file and the firewall ---------------------------------------------------------------

def test_allowlist_takes_bare_networks_and_labelled_ones():
    s = site()
    assert [(str(e), e.label) for e in s.ssh_allowlist] == [("10.213.12.0/24", "Kantor LPSE"), ("10.213.0.0/16", ""),
                                                           ("10.213.12.1/32", "Laptop admin")]


@pytest.mark.parametrize("entries, key, words", [
    ([{"network": "10.213.12.0/24", "label": "Kantor"}, {"network": "10.213.0.0/16", "label": "Kantor"}],
     "ssh_allowlist[1].label", "also the label of ssh_allowlist[0]"),
    ([{"network": "10.213.12.7/24", "label": "Kantor"}], "ssh_allowlist[0].network", "write the network 10.213.12.0/24"),
    ([{"network": "10.213.12.0/24", "label": "Kantor", "lable": "x"}], "ssh_allowlist[0].lable", "unknown key"),
    (["10.213.12.7/24"], "ssh_allowlist[0]", "write the network 10.213.12.0/24"),
    ([{"network": "10.213.12.0/24", "label": "Kantor\nLPSE"}], "ssh_allowlist[0].label", "one line"),
])
def test_bad_allowlist_entries_name_key_and_fix(entries, key, words):
    with pytest.raises(SiteError) as exc:
        site(ssh_allowlist=entries)
    assert f"key '{key}'" in str(exc.value) and words in str(exc.value) and "Fix: " in str(exc.value)


def test_firewall_logs_refused_ssh_to_the_logbook_nflog_group():
    rules, _ = render_ruleset(site(), "primary")
    line = next(ln for ln in rules.splitlines() if "siaga-ssh-refused" in ln)
    assert "tcp dport { 22 }" in line and "log group 7" in line and "limit rate 6/minute" in line
    # After the allowances: an allowed source is accepted before it.
    assert rules.index("ssh from ssh_allowlist") < rules.index("siaga-ssh-refused")
    off, _ = render_ruleset(site(logbook={"log_refused": False}), "primary")
    assert "siaga-ssh-refused" not in off


def test_collect_keeps_what_answered_and_names_the_unreachable_host(tmp_path, monkeypatch, capsys):
    from drc.hosts import remote
    from drc.logbook import command

    s = site(records_dir=str(tmp_path))
    seen = []

    host_now = 1795690800.0

    def run_program(site_, host, name, args, timeout, connect_timeout=5.0, sudo=True):
        seen.append((host, name, sudo, args["since"], args["report_from"]))
        if host == "drc":
            return remote.Result(host, reachable=False, error="NoValidConnectionsError: Unable to connect to port 22")
        return remote.Result(host, reachable=True, exited=0, stdout=json.dumps({**answer(), "now": host_now}))

    monkeypatch.setattr(remote, "run_program", run_program)
    res = command.collect(s)
    assert sorted(h for h, *_ in seen) == ["drc", "primary"] and all(n == "logbook_read" and sudo for _, n, sudo, *_ in seen)
    # The first read: the whole lookback.
    oldest = __import__("time").time() - s.logbook.lookback_days * 86400
    assert all(abs(since - oldest) < 5 and report_from == since + book.MARGIN_S for *_, since, report_from in seen)
    assert res["drc"]["error"].startswith("NoValidConnectionsError") and res["primary"]["new_sessions"] == 5
    assert res["primary"]["new_failures"] == 3
    seen.clear()
    assert command.collect(s)["primary"] == {"error": None, "new_sessions": 0, "new_failures": 0, "ongoing": []}
    # The next read of primary starts a margin before where the last one ended; drc, never read, from the lookback.
    window = {h: (since, report_from) for h, _, _, since, report_from in seen}
    resumed = host_now - book.LAG_S
    assert window["primary"] == (resumed - book.MARGIN_S, resumed) and abs(window["drc"][0] - oldest) < 5
    args = type("A", (), {"site": None, "timeout": 5.0, "json": False})()
    monkeypatch.setattr(command, "load_site", lambda _: s)
    from rich.console import Console

    assert command.cmd_collect(args, Console(width=200)) == 1
    out = capsys.readouterr().out
    assert "drc: not collected" in out and "collected next time" in out and "primary: 0 new session(s)" in out


def test_read_window_and_resume_point():
    s = site()
    assert book.read_window(None, 1000.0) == (1000.0, 1000.0 + book.MARGIN_S)
    assert book.read_window(5000.0, 1000.0) == (5000.0 - book.MARGIN_S, 5000.0)
    assert book.read_window(1100.0, 1000.0) == (1000.0, 1000.0 + book.MARGIN_S)  # never before the lookback
    open_lines = captured()[:-3]  # budi's last session still open
    sessions, _ = logbook_read.assemble(open_lines, BOOT)
    assert book.resume_from(s, {"sessions": sessions, "now": 1795690900.0}) == sessions[4]["start"]
    # A session of an account that is not an admin (a data path between the hosts) holds nothing back.
    sessions[4]["user"] = "siaga-repo"
    assert book.resume_from(s, {"sessions": sessions, "now": 1795690900.0}) == 1795690900.0 - book.LAG_S


def test_a_failed_attempt_that_began_before_report_from_is_left_out():
    _, failures = logbook_read.assemble(captured(), BOOT)
    refused = next(f for f in failures if f["kind"] == "refused by firewall")
    # The refused connection's three SYNs: reported from its first one, not from its middle.
    _, later = logbook_read.assemble(captured(), BOOT, report_from=refused["start"] + 0.5)
    assert [f["port"] for f in later] == [55204, 55214]
    _, same = logbook_read.assemble(captured(), BOOT, report_from=refused["start"])
    assert len(same) == 3


def test_the_journal_is_read_by_syslog_identifier(monkeypatch):
    """Not by _COMM: journald cannot read it from an exiting process, and the monitor's last line
    ("session closed", seen so on the lab's drc host) comes from one."""
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        lines = "\n".join(json.dumps(e) for e in captured()[:3])
        return type("P", (), {"returncode": 0, "stdout": lines + "\nnot json\n", "stderr": ""})()

    monkeypatch.setattr(logbook_read.subprocess, "run", run)
    assert len(logbook_read.journal(1795690780.9)) == 3
    (cmd,) = calls
    assert "--since=@1795690780" in cmd and not any(c.startswith("_COMM=") for c in cmd)
    assert {c for c in cmd if c.startswith("SYSLOG_IDENTIFIER=")} == {
        "SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sshd-session", "SYSLOG_IDENTIFIER=sshd-auth", "SYSLOG_IDENTIFIER=ulogd"}
