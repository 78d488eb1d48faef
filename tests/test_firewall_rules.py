"""roles/firewall/rules.py: which inbound ports each host opens, and to whom (SOP RA-2, IN-2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.site import Site, parse_site
from roles.firewall.rules import InboundRule, inbound_rules

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXRlc3Qta2V5LW5vdC1mb3ItYW55LWhvc3Qh operator@lab"


def make_site(**over) -> Site:
    data = {
        "site": "lab",
        "admin_workstations": ["10.77.0.1/32"],
        "ssh_allowlist": ["10.77.0.0/24", "2001:db8:77::/48"],
        "connection": {"user": "operator", "key_file": "/tmp/id"},
        "admins": [{"name": "operator", "ssh_keys": [KEY]}],
        "sites": {
            "primary": {"networks": ["10.77.1.0/24"], "hosts": ["app1", "app2"]},
            "drc": {"networks": ["10.77.2.0/24"], "hosts": ["drc1"]},
        },
        "hosts": {"app1": {"address": "10.77.1.10"}, "app2": {"address": "10.77.1.11"}, "drc1": {"address": "10.77.2.10"}},
        # The monitoring ports have tests of their own (test_monitoring_ports_*).
        "monitoring": {"enabled": False},
    }
    data.update(over)
    return parse_site(data, Path("test.yaml"))


def by_port(rules: list[InboundRule]) -> dict[int, InboundRule]:
    return {r.port: r for r in rules}


def test_active_site_host_opens_ssh_web_and_postgresql():
    rules = inbound_rules(make_site(), "app1")
    # SSH twice: from the allowlist, and from the backup repository host (roles/backup, keys forced).
    assert [(r.port, r.proto) for r in rules] == [(22, "tcp"), (80, "tcp"), (443, "tcp"), (22, "tcp"), (5432, "tcp")]
    assert rules[3].sources == ("10.77.2.10/32",) and "backups" in rules[3].comment
    ssh, web, pg = rules[0], by_port(rules)[443], by_port(rules)[5432]
    assert ssh.sources == ("10.77.0.0/24", "2001:db8:77::/48") and not ssh.anywhere
    assert ssh.sources_v4 == ["10.77.0.0/24"] and ssh.sources_v6 == ["2001:db8:77::/48"]
    assert web.anywhere and web.sources == ()
    # Only the other site's hosts, never the same site's neighbour.
    assert pg.sources == ("10.77.2.10/32",) and not pg.anywhere


def test_standby_site_host_keeps_web_closed():
    rules = by_port(inbound_rules(make_site(), "drc1"))
    assert set(rules) == {22, 5432}
    assert rules[5432].sources == ("10.77.1.10/32", "10.77.1.11/32")


def test_switching_active_site_moves_the_web_ports():
    site = make_site(active_site="drc")
    assert {80, 443} <= set(by_port(inbound_rules(site, "drc1")))
    assert not {80, 443} & set(by_port(inbound_rules(site, "app1")))


def test_ports_follow_the_settings():
    site = make_site(
        firewall={"web_ports": [8443], "postgresql_port": 6432},
        ssh_hardening={"port": 2222},
        connection={"user": "operator", "key_file": "/tmp/id", "port": 2222},
    )
    assert [r.port for r in inbound_rules(site, "app1")] == [2222, 8443, 2222, 6432]


def test_backup_ssh_only_between_data_host_and_repository():
    site = make_site()
    assert [r.sources for r in inbound_rules(site, "drc1") if "backups" in r.comment] == [("10.77.1.10/32",)]
    assert [r.sources for r in inbound_rules(site, "app2") if "backups" in r.comment] == []
    off = make_site(backup={"enabled": False})
    assert not [r for r in inbound_rules(off, "drc1") if "backups" in r.comment]


def test_connection_port_stays_open_while_sshd_moves():
    site = make_site(ssh_hardening={"port": 2222})  # connection.port stays 22
    allow = ("10.77.0.0/24", "2001:db8:77::/48")
    ssh = [r for r in inbound_rules(site, "drc1") if "ssh" in r.comment]
    assert [(r.port, r.sources) for r in ssh] == [(2222, allow), (22, allow)]


def test_extra_allow_is_added_on_every_host():
    site = make_site(firewall={"extra_allow": [
        {"port": 10050, "sources": ["198.51.100.20/32"], "comment": "LKPP monitoring"},
        {"port": 161, "proto": "udp", "sources": ["198.51.100.21/32"]},
    ]})
    for host in ("app1", "drc1"):
        extra = inbound_rules(site, host)[-2:]
        assert extra == [
            InboundRule(10050, "tcp", ("198.51.100.20/32",), "LKPP monitoring"),
            InboundRule(161, "udp", ("198.51.100.21/32",), "firewall.extra_allow[1]"),
        ]


def test_unknown_host_is_an_error():
    with pytest.raises(KeyError, match="ghost"):
        inbound_rules(make_site(), "ghost")


def test_monitoring_ports_open_to_the_peer_site_admins_and_lkpp_only():
    """roles/monitoring: exporters and Alertmanager to the peer site's Prometheus and the admins, the
    cluster port to the peer only, Prometheus (read-only API) also to LKPP's networks (SOP IN-3)."""
    site = make_site(monitoring={"lkpp_sources": ["203.0.113.0/28"]})
    rules = [r for r in inbound_rules(site, "drc1") if r.port >= 9090]
    got = {(r.port, r.proto): r.sources for r in rules}
    peers, admin = ("10.77.1.10/32", "10.77.1.11/32"), ("10.77.0.1/32",)
    assert got == {(9100, "tcp"): peers + admin, (9187, "tcp"): peers + admin, (9093, "tcp"): peers + admin,
                   (9094, "tcp"): peers, (9094, "udp"): peers, (9090, "tcp"): peers + admin + ("203.0.113.0/28",)}
    assert not any(r.anywhere for r in rules)
    assert not [r for r in inbound_rules(make_site(monitoring={"enabled": False}), "drc1") if r.port >= 9090]


def test_while_a_site_is_lost_the_repository_lets_the_lost_database_host_reach_ssh_for_its_fail_back():
    # SOP EM-3.8, BK-1: the repository is at the serving site; the fail-back's rewound host reads the
    # archived WAL there (its key let in by the fail-back alone). The lost site's hosts open nothing new.
    lost = make_site(active_site="drc", lost_site="primary")
    assert [r.sources for r in inbound_rules(lost, "drc1") if "backups" in r.comment] == [("10.77.1.10/32",)]
    assert [r.sources for r in inbound_rules(lost, "app1") if "backups" in r.comment] == []
    off = make_site(active_site="drc", lost_site="primary", backup={"enabled": False})
    assert not [r for r in inbound_rules(off, "drc1") if "backups" in r.comment]
