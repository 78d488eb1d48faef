"""The lab's host-count setting: the default lab is unchanged, extra servers alternate the sites."""

import pytest

from drc.lab.lab import HOSTS, LabError, lab_hosts


def test_default_lab_is_primary_drc_outsider():
    assert [(h.name, h.site, h.segment, h.octet) for h in HOSTS] == [
        ("primary", "primary", 1, 10), ("drc", "drc", 2, 10), ("outsider", "outside", 3, 10)]
    assert lab_hosts(2) == HOSTS


def test_extra_servers_alternate_sites_with_own_addresses():
    hosts = lab_hosts(16)
    servers = [h for h in hosts if h.site != "outside"]
    assert len(servers) == 16
    assert sum(h.site == "primary" for h in servers) == sum(h.site == "drc" for h in servers) == 8
    assert hosts[:3] == HOSTS
    assert [h.name for h in hosts[3:7]] == ["primary2", "drc2", "primary3", "drc3"]
    assert len({(h.segment, h.octet) for h in hosts}) == len(hosts)  # no two hosts share an address
    assert all(h.segment == (1 if h.site == "primary" else 2) for h in servers)
    assert len({h.name for h in hosts}) == len(hosts)
    assert [h.name for h in lab_hosts(3)] == ["primary", "drc", "outsider", "primary2"]


@pytest.mark.parametrize("servers", [0, 1, 65])
def test_server_count_out_of_range_is_refused(servers):
    with pytest.raises(LabError):
        lab_hosts(servers)
