"""roles/factcache.py: several facts in one command give what each fact gives on its own."""

from __future__ import annotations

import subprocess

from pyinfra.api import FactBase
from pyinfra.facts.files import Directory, File, FileContents, Sha1File

from roles.base.facts import Account
from roles.factcache import FactBatch, _batchable
from roles.ssh_hardening.facts import WeakDhModuli


class Fails(FactBase):
    def command(self) -> str:
        return "echo partial; exit 3"


class NeedsMissingBinary(FactBase):
    def requires_command(self) -> str:
        return "siaga-no-such-binary"

    def command(self) -> str:
        return "echo should-not-run"


class Exits(FactBase):
    """A fact whose command ends with `exit 0`: must not end the batch."""

    def command(self) -> str:
        return "echo one; exit 0; echo never"


def sh(command) -> tuple[int, list[str]]:
    text = command.get_raw_value() if hasattr(command, "get_raw_value") else str(command)
    proc = subprocess.run(["sh", "-c", text], capture_output=True, text=True)
    return proc.returncode, proc.stdout.splitlines()


def alone(cls, **kwargs):
    fact = cls()
    rc, out = sh(fact.command(**kwargs))
    assert rc == 0
    return fact.process(out) if out else fact.default()


def batched(entries):
    marker = "##SIAGA-test"
    rc, out = sh(FactBatch().command(entries=entries, marker=marker))
    assert rc == 0
    return FactBatch().process_batch(out, len(entries), marker)


def test_batch_gives_each_fact_its_own_output(tmp_path):
    f = tmp_path / "a file"
    f.write_text("one\ntwo\n")
    moduli = tmp_path / "moduli"
    moduli.write_text("# comment\n20200101 2 6 100 2047 2 AB\n20200101 2 6 100 4095 2 CD\n")
    entries = [(File, {"path": str(f)}), (Sha1File, {"path": str(f)}), (FileContents, {"path": str(f)}),
               (Directory, {"path": str(tmp_path)}), (File, {"path": str(tmp_path / "missing")}),
               (WeakDhModuli, {"minimum_bits": 3072, "path": str(moduli)}), (Exits, {}), (Account, {"user": "root"})]
    results = batched(entries)
    for (cls, kwargs), result in zip(entries, results):
        assert result is not None and result[0] == 0, (cls, result)
        fact = cls()
        fact.command(**kwargs)
        value = fact.process(result[1]) if result[1] else fact.default()
        assert value == alone(cls, **kwargs), cls
    assert results[6][1] == ["one"]


def test_failed_or_missing_command_is_reported_not_hidden():
    results = batched([(Fails, {}), (NeedsMissingBinary, {}), (Exits, {})])
    assert results[0] == (3, ["partial"])  # not cached: read on its own, with pyinfra's error handling
    assert results[1][0] == 127 and results[1][1] == []
    assert results[2] == (0, ["one"])


def test_output_that_looks_like_a_marker_of_another_batch_is_plain_output():
    class Tricky(FactBase):
        def command(self) -> str:
            return "echo '##SIAGA-other 5'"

    assert batched([(Tricky, {})]) == [(0, ["##SIAGA-other 5"])]


def test_what_is_batched():
    assert _batchable(File) and _batchable(Account) and _batchable(NeedsMissingBinary)
    assert not _batchable(FactBatch)

    class WithPrecondition(FactBase):
        def check_preconditions(self, state, host):
            return "no"

        def command(self) -> str:
            return "true"

    assert not _batchable(WithPrecondition)


def test_cache_holds_until_a_command_runs_on_the_host(tmp_path, monkeypatch):
    """With the cache installed, a fact is read once; any command on the host drops what was read,
    so a fact read after a change is read again (as without the cache)."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all

    from roles import factcache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    factcache.install()
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")
    target = tmp_path / "made"
    assert host.get_fact(File, path=str(target)) is None
    target.write_text("behind pyinfra's back\n")
    assert host.get_fact(File, path=str(target)) is None  # cached: no second read
    host.run_shell_command(f"rm -f {target}")  # an operation's command
    assert host.get_fact(File, path=str(target)) is None  # read again
    host.run_shell_command(f"touch {target}")
    assert host.get_fact(File, path=str(target))["mode"] is not None
    disconnect_all(state)
    plans = list((tmp_path / "cache" / "siaga" / "fact-plans").glob("*.json"))
    assert len(plans) == 1 and str(target) in plans[0].read_text()


def test_each_deploy_file_batches_its_own_plan(tmp_path, monkeypatch):
    """Remote access alone must not pay for the data tier's facts: plans are kept per deploy file."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all

    from roles import factcache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    factcache.install()
    a, b = tmp_path / "a", tmp_path / "b"

    def run(sections):
        inventory = Inventory((["@local"], {}))
        state = State(inventory, Config())
        connect_all(state)
        host = inventory.get_host("@local")
        for name, path in sections:
            factcache.begin_section(host, name)
            host.get_fact(File, path=str(path))
        hf = factcache._facts_of(host)
        disconnect_all(state)
        return hf

    run([("remote_access", a), ("data_tier", b)])
    hf = run([("remote_access", a)])
    assert hf.batched == {"remote_access"}
    assert not any(str(b) in repr(key) for key in hf.values)  # the data tier's fact was not read
    hf = run([("remote_access", a), ("data_tier", b)])  # its plan was kept
    assert hf.batched == {"remote_access", "data_tier"}


def test_commands_ending_in_a_separator_or_changing_the_shell_stay_apart():
    class Semicolon(FactBase):
        def command(self) -> str:
            return "echo a;"

    class ChangesDir(FactBase):
        def command(self) -> str:
            return "cd / && pwd"

    results = batched([(Semicolon, {}), (ChangesDir, {}), (Exits, {}), (Semicolon, {})])
    assert results == [(0, ["a"]), (0, ["/"]), (0, ["one"]), (0, ["a"])]
