"""Pure parts of the traffic switch and the probe: the TSIG key file, the update message with its
prerequisite, the TTL-honouring resolver, the gap (RTO) and the watcher's summary."""

from __future__ import annotations

import base64
from pathlib import Path

import dns.rdataclass
import dns.rdatatype
import dns.tsig
import pytest

from drc.probe.watcher import summarise
from drc.probe.writer import ProbeError, TtlResolver, gaps
from drc.site.traffic import DnsUpdateSettings
from drc.traffic.dns import Answer, TrafficError, build_update, parse_key_text, read_key

SECRET = base64.b64encode(bytes(range(32))).decode()


def settings(path: Path, **kw) -> DnsUpdateSettings:
    return DnsUpdateSettings(servers=["192.0.2.53"], zone="lab.example", key_name="lpse-update", key_file=path, **kw)


@pytest.mark.parametrize("text", [
    f'key "lpse-update" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n',
    f"key:\n  - id: lpse-update\n    algorithm: hmac-sha256\n    secret: {SECRET}\n",
    f"{SECRET}\n",
])
def test_key_file_forms(tmp_path, text):
    f = tmp_path / "k"
    f.write_text(text)
    f.chmod(0o600)
    key = read_key(settings(f))
    assert key.secret == bytes(range(32)) and key.algorithm == dns.tsig.HMAC_SHA256
    assert str(key.name) == "lpse-update."


def test_key_file_readable_by_others_or_wrong_algorithm_is_refused(tmp_path):
    f = tmp_path / "k"
    f.write_text(f'key "lpse-update" {{ algorithm hmac-sha512; secret "{SECRET}"; }};')
    f.chmod(0o644)
    with pytest.raises(TrafficError, match="chmod 600"):
        read_key(settings(f))
    f.chmod(0o600)
    with pytest.raises(TrafficError, match="key_algorithm: hmac-sha512"):
        read_key(settings(f))
    assert read_key(settings(f, key_algorithm="hmac-sha512")).algorithm == dns.tsig.HMAC_SHA512
    f.write_text("not a key")
    with pytest.raises(TrafficError, match="no secret found"):
        read_key(settings(f))
    with pytest.raises(TrafficError, match="cannot read"):
        read_key(settings(tmp_path / "absent"))
    assert parse_key_text("secret: short") is None


def test_update_requires_the_old_address_then_replaces_it():
    key = dns.tsig.Key("lpse-update", bytes(range(32)), "hmac-sha256")
    upd = build_update("lab.example", "lpse.lab.example", 60, "10.0.2.10", "10.0.1.10", key)
    assert str(upd.zone[0].name) == "lab.example."
    prereq = upd.prerequisite
    assert len(prereq) == 1 and str(prereq[0].name) == "lpse" and prereq[0].rdtype == dns.rdatatype.A
    assert [rd.address for rd in prereq[0]] == ["10.0.1.10"]  # RRset exists, value-dependent (RFC 2136 2.4.2)
    ops = upd.update
    # Delete the name's A RRset (class ANY), then add the new one: one message, applied atomically.
    assert [(str(r.name), r.deleting, r.rdtype, [rd.address for rd in r]) for r in ops] == [
        ("lpse", dns.rdataclass.ANY, dns.rdatatype.A, []), ("lpse", None, dns.rdatatype.A, ["10.0.2.10"])]
    assert ops[1].ttl == 60
    wire = upd.to_wire()  # signed: the TSIG record is on the wire
    assert b"lpse-update" in wire and upd.had_tsig and upd.keyname is not None
    unsigned = build_update("lab.example", "lpse.lab.example", 60, "10.0.2.10", None, None)
    assert unsigned.prerequisite == [] and unsigned.keyname is None


def test_resolver_honours_the_ttl():
    clock = [100.0]
    calls = []

    def asker(server, port, name):
        calls.append(server)
        if server == "ns1":
            return Answer(server, error="timeout")
        return Answer(server, (f"10.0.0.{len(calls)}",), 60)

    r = TtlResolver("lpse.lab.example", ["ns1", "ns2"], clock=lambda: clock[0], asker=asker)
    address, fresh = r.address()
    assert address == "10.0.0.2" and fresh.server == "ns2" and calls == ["ns1", "ns2"]
    clock[0] += 59.9
    assert r.address() == ("10.0.0.2", None) and len(calls) == 2  # from the cache
    clock[0] += 0.2
    address, fresh = r.address()
    assert address == "10.0.0.4" and fresh is not None and len(calls) == 4


def test_resolver_without_any_answer_fails_then_serves_stale():
    r = TtlResolver("x.example", ["ns1"], clock=lambda: 0.0, asker=lambda s, p, n: Answer(s, error="SERVFAIL"))
    with pytest.raises(ProbeError, match="ns1: SERVFAIL"):
        r.address()


def test_gap_is_the_largest_between_consecutive_acks():
    rows = [{"event": "start"}] + [{"event": "ack", "acked": t} for t in (1.0, 1.1, 1.2, 3.7, 3.8)] + [{"event": "error", "seq": 9}]
    assert gaps(rows) == {"acked": 5, "max_gap_s": 2.5, "gap_from": 1.2}
    assert gaps([{"event": "ack", "acked": 1.0}])["max_gap_s"] is None


def test_watcher_summary_counts_two_writable_primaries():
    def states(writable, down=()):
        return {h: "down: timeout" if h in down else "primary" if h in writable else "standby" for h in ("primary", "drc")}

    rounds = [{"event": "round", "at": a, "writable": w, "states": states(w, d)} for a, w, d in
              ((0.0, ["primary"], ()), (0.25, ["primary", "drc"], ()), (0.5, [], ()), (0.75, [], ("primary",)), (1.45, ["drc"], ()))]
    s = summarise([{"event": "start"}, *rounds, {"event": "end"}])
    assert s == {"rounds": 5, "split_brain_rounds": 1, "no_primary_rounds": 1, "unanswered_rounds": 1,
                 "primaries": ["drc", "primary"], "longest_round_gap_s": 0.7, "longest_poll_gap_s": None}


def _command_site(tmp_path: Path, run: bool):
    """A site whose traffic moves by a command: a real script that records the address in a file
    (an edge NAT's table), and a check that prints it."""
    from drc.site import load_site
    from tests.test_site_validation import LAB

    table = tmp_path / "edge-nat"
    table.write_text("198.51.100.10\n")
    mover = tmp_path / "move"
    mover.write_text(f"#!/bin/sh\necho \"$1\" > {table}\n")
    mover.chmod(0o755)
    how = f'    run: ["{mover}", "{{address}}"]\n' if run else "    instructions: ask the edge team to point {name} at {address}\n"
    (tmp_path / "site.yaml").write_text(LAB + f"""traffic:
  public_name: lpse.lab.example
  addresses: {{primary: 198.51.100.10, drc: 203.0.113.10}}
  method: command
  verify_deadline_seconds: 1
  command:
{how}    check: [cat, "{table}"]
""")
    return load_site(tmp_path / "site.yaml"), table


def test_command_method_runs_then_verifies_and_is_idempotent(tmp_path):
    from drc.traffic import current, switch

    site, table = _command_site(tmp_path, run=True)
    said = []
    res = switch(site, "drc", log=said.append)
    assert res.changed and res.old_address == "198.51.100.10" and table.read_text() == "203.0.113.10\n"
    assert [a.addresses for a in current(site)] == [("203.0.113.10",)]
    table.write_text("203.0.113.10\n")
    again = switch(site, "drc", log=said.append)
    assert not again.changed and len(said) == 1  # nothing run the second time


def test_command_method_without_a_command_waits_then_times_out(tmp_path):
    from drc.traffic import switch

    site, table = _command_site(tmp_path, run=False)
    said = []
    with pytest.raises(TrafficError, match="timed out after 1s waiting for the check to show lpse.lab.example at 203.0.113.10"):
        switch(site, "drc", log=said.append)
    assert said == ["traffic: waiting for: ask the edge team to point lpse.lab.example at 203.0.113.10"]
    assert table.read_text() == "198.51.100.10\n"
