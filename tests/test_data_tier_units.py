"""Data tier pieces that need no host: SCRAM verifiers, rendered configs, settings loading."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import yaml

from drc.site import SiteError
from drc.site.data_tier import load_data_tier
from roles.postgresql.deploy import render_conf, render_hba
from roles.postgresql.defaults import PostgresqlSettings
from roles.postgresql.operations import scram_verifier, verifier_matches


def test_scram_verifier_matches_rfc7677_shape_and_checks_password():
    v = scram_verifier("s3cret", salt=b"0123456789abcdef", iterations=4096)
    assert v.startswith("SCRAM-SHA-256$4096:" + base64.b64encode(b"0123456789abcdef").decode() + "$")
    assert verifier_matches(v, "s3cret")
    assert not verifier_matches(v, "s3cret!")
    assert not verifier_matches(None, "s3cret")
    assert not verifier_matches("md5abc", "s3cret")
    # Independent computation of StoredKey (RFC 5802): SHA256(HMAC(SaltedPassword, "Client Key"))
    salted = hashlib.pbkdf2_hmac("sha256", b"s3cret", b"0123456789abcdef", 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    assert base64.b64encode(stored).decode() in v


def test_postgresql_conf_listens_only_locally_and_on_own_address():
    conf = render_conf(PostgresqlSettings(), "10.10.1.10", 5432)
    assert "listen_addresses = 'localhost,10.10.1.10'" in conf
    assert "wal_log_hints = on" in conf
    assert "password_encryption = 'scram-sha-256'" in conf


def test_hba_allows_replication_only_from_peers():
    hba = render_hba(PostgresqlSettings(), "replicator", ["10.10.2.10"])
    lines = [line.split() for line in hba.splitlines() if line and not line.startswith("#")]
    replication = [line for line in lines if line[1] == "replication"]
    assert replication == [["host", "replication", "replicator", "10.10.2.10/32", "scram-sha-256"]]
    assert not any(line[-1] in ("trust", "md5", "password") for line in lines)
    assert not any(line[0] == "host" and line[3] not in ("127.0.0.1/32", "::1/128", "10.10.2.10/32") for line in lines)


def test_data_tier_keys_are_read_from_the_site_file(tmp_path):
    example = yaml.safe_load(open("inventory/production.example.yaml"))
    example["postgresql"] = {"database": "epns_lat"}
    example["active_site"] = "drc"
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(example))
    tier = load_data_tier(path)
    assert tier.postgresql.database == "epns_lat"
    assert (tier.replication.source_site, tier.uploads_sync.source_site, tier.site.backup.repository_site) == ("drc", "drc", "primary")
    assert tier.db_source_hosts == tier.site.hosts_in("drc")
    assert set(tier.db_standby_hosts) == set(tier.site.hosts_in("primary"))
    example["postgresql"] = {"databse": "epns_lat"}
    path.write_text(yaml.safe_dump(example))
    with pytest.raises(SiteError, match="key 'postgresql.databse': unknown key"):
        load_data_tier(path)


def _node(**kw):
    base = {"installed": True, "data_dir_present": True, "running": True, "in_recovery": False,
            "system_identifier": "111", "timeline": 1, "cluster_state": "in production",
            "user_databases": [], "receiver": None}
    return {**base, **kw}


def _tier(tmp_path, source_site="primary"):
    example = yaml.safe_load(open("inventory/production.example.yaml"))
    example["active_site"] = source_site
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(example))
    return load_data_tier(path)


def test_preflight_refuses_a_standby_labelled_primary_and_a_primary_labelled_standby(tmp_path):
    from roles.replication.deploy import already_standby, preflight_problems

    tier = _tier(tmp_path)
    (src,), standbys = tier.db_source_hosts, tier.db_standby_hosts
    fresh = {src: _node(user_databases=["epns_prod"]), **{s: _node(system_identifier="222") for s in standbys}}
    assert preflight_problems(tier, fresh) == []  # a fresh DRC cluster (no databases) may be rebuilt
    assert not already_standby(tier, fresh, standbys[0])

    following = {src: _node(), **{s: _node(in_recovery=True) for s in standbys}}
    assert preflight_problems(tier, following) == []
    assert already_standby(tier, following, standbys[0])

    promoted = {src: _node(), **{s: _node(system_identifier="111", user_databases=["epns_prod"]) for s in standbys}}
    assert any("never wipes a primary" in p for p in preflight_problems(tier, promoted))

    demoted = {src: _node(in_recovery=True), **{s: _node(in_recovery=True) for s in standbys}}
    assert any("is a standby" in p for p in preflight_problems(tier, demoted))

    foreign = {src: _node(), **{s: _node(in_recovery=True, system_identifier="999") for s in standbys}}
    assert any("another database system" in p for p in preflight_problems(tier, foreign))


def test_replication_password_is_generated_once_0600_and_never_in_the_repo(tmp_path):
    import os
    import stat

    import pytest

    from roles.workstation_secrets import SecretError, generate_password, read_password, secrets_dir

    d = secrets_dir("lab", tmp_path / "secrets")
    first = generate_password(d, "replication.password")
    assert read_password(d, "replication.password") == first and len(first) >= 32
    with pytest.raises(FileExistsError):  # never over an existing one
        generate_password(d, "replication.password")
    with pytest.raises(SecretError, match="missing on this workstation"):
        read_password(d, "other.password")
    assert stat.S_IMODE(os.stat(d / "replication.password").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
