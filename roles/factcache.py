"""Facts read once per host and in one SSH round trip, as long as nothing changed the host.

pyinfra 3 keeps no fact cache: every `host.get_fact(...)` (ours and those inside pyinfra's own
operations: files.put, files.directory, apt.packages, server.user, ...) is one command over SSH,
with sudo. A no-change re-run of the site deploy asked ~230 facts per host, ~90 of them repeats
(DebPackages 19 times, File/Sha1File of the same path from the pre-change planning and again from
the operation). The profile is in README.md ("Benchmarks").

Two things here, both installed by `install()` (called by `drc.hosts.inventory.this_host_in_site`,
i.e. by every deploy file):

1. A per-host cache of fact values, keyed by the fact, its arguments and the connector arguments
   (sudo user, ...) pyinfra would run it with. It is valid only while no command has run on that
   host: any operation command (`run_shell_command` or `put_file` outside a fact read, a Python
   callback, rsync) or failed operation drops the host's whole cache, so a fact read after a
   change is read again, exactly as without the cache. Two readers of the same fact at the same
   time (each host's deploy file reads the other's PostgreSQL) wait for one read.

2. A fact plan per host and deploy file (`begin_section`: remote_access, data_tier): the facts it
   read on that host in its last run (kept on the workstation, `$XDG_CACHE_HOME/siaga/fact-plans/`).
   The first fact read of a deploy file on a host runs every planned fact of it in one command (`FactBatch`: each fact's own command in a subshell, its output and exit status
   framed by a random marker, each output handed to the fact's own `process`) and fills the cache.
   A planned fact the deploy no longer asks for costs only its lines in that one command; a fact
   that failed in the batch is not cached and is read on its own (with pyinfra's error handling).
   Facts with preconditions or a required binary are never batched.

`SIAGA_FACT_CACHE=0` turns both off (every fact read on its own, as plain pyinfra does).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from pyinfra import logger
from pyinfra.api import FactBase, StringCommand
from pyinfra.api.command import FunctionCommand, RsyncCommand
from pyinfra.api.host import Host
from pyinfra.api.state import BaseStateCallback

ENV = "SIAGA_FACT_CACHE"
PLAN_VERSION = 3
DEFAULT_SECTION = "deploy"
_installed = False


def enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


def plan_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "siaga" / "fact-plans"


_SHELL_CHANGES = re.compile(r"\b(exit|exec|cd|set|trap|export|unset|shift|return|umask|readonly|local|IFS|alias|source)\b|(^|[\s;])\.\s")


class FactBatch(FactBase):
    """Several facts in one command. ``entries``: [(fact class, kwargs)]; returns
    ``[(exit status, stdout lines)]`` in the same order (None for an entry whose output is missing)."""

    def command(self, entries: list, marker: str) -> StringCommand:
        parts: list[Any] = []
        for i, (cls, kwargs) in enumerate(entries):
            fact = cls()
            cmd = fact.command(**kwargs) if callable(fact.command) else fact.command
            needs = fact.requires_command(**kwargs)
            if needs:  # missing binary: status 127, so the fact is read on its own (pyinfra's default then)
                cmd = StringCommand("if command -v", needs, ">/dev/null 2>&1; then", "(", cmd, "); else exit 127; fi")
            # A fact's command was written for a shell of its own: a subshell where it could end or
            # change the shell (exit, cd, set, ...), else a brace group (one fork less per fact).
            text = cmd.get_raw_value() if isinstance(cmd, StringCommand) else str(cmd)
            opening, closing = ("(", "\n)") if _SHELL_CHANGES.search(text) else ("{", "\n}")
            parts += ["echo", f"'{marker} {i}';", opening, cmd, closing, "2>/dev/null;", "echo", f"\"{marker} rc $?\";"]
        return StringCommand(*parts, "true")

    def process_batch(self, output: list[str], count: int, marker: str) -> list[tuple[int, list[str]] | None]:
        results: list[tuple[int, list[str]] | None] = [None] * count
        current, lines = None, []
        for line in output:
            if line.startswith(marker + " "):
                word = line[len(marker) + 1:]
                if word.startswith("rc ") and current is not None:
                    results[current] = (int(word[3:]), lines)
                    current, lines = None, []
                elif word.isdigit():
                    current, lines = int(word), []
            elif current is not None:
                lines.append(line)
        return results

    def process(self, output: list[str]):
        return output


def _batchable(cls: type) -> bool:
    return (isinstance(cls, type) and issubclass(cls, FactBase) and cls is not FactBatch
            and cls.check_preconditions is FactBase.check_preconditions
            and not getattr(cls, "shell_executable", None))


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str):
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    return value


class _HostFacts:
    """One host's cache, in-flight reads, plan and what this run asked for."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.inflight: dict = {}
        self.fact_depth = 0
        self.plan: dict | None = None  # sections -> [[class path, kwargs]] from the last runs
        self.batched: set[str] = set()  # sections whose plan ran in this run
        self.asked: dict[str, dict[str, tuple[str, dict]]] = {}  # section -> json key -> (class path, kwargs)
        self.sections: list[tuple[str, frozenset]] = []  # (name, the host's operations before it began)
        self.connector_memo: tuple | None = None

    def drop(self) -> None:
        self.values.clear()


def _facts_of(host: Host) -> _HostFacts:
    hf = getattr(host, "_siaga_facts", None)
    if hf is None:
        hf = _HostFacts()
        host._siaga_facts = hf
    return hf


def begin_section(host: Host, name: str) -> None:
    """A deploy file (e.g. remote_access, data_tier) starts adding this host's operations. Each
    keeps its own plan, so remote access alone batches only its own facts."""
    if not isinstance(host, Host):
        return
    hf = _facts_of(host)
    ops = frozenset(host.state.ops.get(host, {})) if host.state is not None else frozenset()
    hf.sections.append((name, ops))


def _section(host: Host, hf: _HostFacts) -> str:
    """The deploy file a fact read belongs to: that of the operation being run, else (while the
    deploy files are loaded) the one loading now."""
    op = host.current_op_hash
    for name, before in reversed(hf.sections):
        if op is None or op not in before:
            return name
    return hf.sections[0][0] if hf.sections else DEFAULT_SECTION


def _plan_file(host: Host) -> Path:
    ident = f"{host.data.get('siaga_site_file', '')}|{host.name}|{host.data.get('ssh_hostname', '')}"
    return plan_dir() / f"{hashlib.sha1(ident.encode()).hexdigest()[:16]}.json"


def _connector(host: Host) -> tuple | None:
    """The connector arguments (sudo, sudo user, ...) a fact read now runs with, as pyinfra's
    `_handle_fact_kwargs` works them out: those of the operation being run, else the host's. Worked
    out once per operation (pyinfra does it with get_type_hints at every read: 1 ms each)."""
    from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
    from pyinfra.api.facts import _handle_fact_kwargs

    hf = _facts_of(host)
    current = host.current_op_global_arguments
    memo_key = id(current) if current is not None else None
    memo = hf.connector_memo
    if memo is not None and memo[0] == memo_key and memo[1] is current:
        return memo[2]
    _fact_kwargs, global_kwargs = _handle_fact_kwargs(host.state, host, FactBase, [], {})
    connector = tuple((k, repr(global_kwargs.get(k))) for k in CONNECTOR_ARGUMENT_KEYS)
    hf.connector_memo = (memo_key, current, connector)
    return connector


_PARAMS: dict = {}


def _fact_kwargs(cls, args, kwargs) -> dict:
    """The fact's arguments by name, as pyinfra's getcallargs gives them (defaults filled in)."""
    if not args and not kwargs:
        return {}
    sig = _PARAMS.get(cls)
    if sig is None:
        sig = _PARAMS[cls] = inspect.signature(cls.command)
    bound = sig.bind(None, *args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in list(bound.arguments.items())[1:]}


def _signature(host: Host, cls, args, kwargs):
    """(cache key, fact kwargs) as pyinfra would run the fact, or None when not cacheable."""
    if any(k.startswith("_") for k in kwargs):
        return None  # explicit global arguments: read as asked, uncached
    try:
        fact_kwargs = _fact_kwargs(cls, args, kwargs)
        key = (_class_path(cls), _freeze(fact_kwargs), _connector(host))
        hash(key)
    except Exception as exc:  # noqa: BLE001 - anything odd: no caching for this read
        logger.debug("siaga fact cache: %s not cacheable: %r", cls, exc)
        return None
    return key, fact_kwargs


class _Callbacks(BaseStateCallback):
    """A failed operation drops its host's cache; at the end of the run each host's plan is saved."""

    @staticmethod
    def operation_host_error(state, host, op_hash, retry_count: int = 0, max_retries: int = 0):
        _facts_of(host).drop()

    @staticmethod
    def host_disconnect(state, host):
        save_plan(host)


def _load_plan(host: Host) -> dict:
    try:
        plan = json.loads(_plan_file(host).read_text())
    except (OSError, ValueError):
        return {}
    return plan.get("sections", {}) if plan.get("version") == PLAN_VERSION else {}


def _run_plan(host: Host, section: str, orig_get_fact, signature_key) -> None:
    """First fact read of a section on `host`: its facts of the last run (same connector
    arguments) in one command."""
    hf = _facts_of(host)
    hf.batched.add(section)
    if hf.plan is None:
        hf.plan = _load_plan(host)
    entries, keys = [], []
    for class_path, kwargs in hf.plan.get(section, []):
        try:
            cls = _load_class(class_path)
        except Exception:  # noqa: BLE001 - a fact that moved or went away
            continue
        if not _batchable(cls):
            continue
        sig = _signature(host, cls, (), kwargs)
        if sig is None or sig[0][2] != signature_key[2] or sig[0] in hf.values:
            continue
        entries.append((cls, sig[1]))
        keys.append(sig[0])
    if not entries:
        return
    import gevent.event

    marker = f"##SIAGA-{secrets.token_hex(8)}"
    # Readers of these facts meanwhile (another host's deploy file) wait for the batch.
    waiters = {key: gevent.event.AsyncResult() for key in keys if key not in hf.inflight}
    hf.inflight.update(waiters)
    hf.fact_depth += 1
    try:
        # A batch that fails as a whole (it should not) fails no host: its facts are read one by one.
        output = orig_get_fact(host, FactBatch, entries=entries, marker=marker, _ignore_errors=True)
    finally:
        hf.fact_depth -= 1
        for key, waiter in waiters.items():
            hf.inflight.pop(key, None)
    try:
        _seed(hf, entries, keys, FactBatch().process_batch(output or [], len(entries), marker))
    finally:
        for key, waiter in waiters.items():
            waiter.set(hf.values.get(key, _MISSING))
    logger.debug("siaga fact plan: %d facts of %s in one command on %s", len(entries), section, host.name)


_MISSING = object()


def _seed(hf: _HostFacts, entries, keys, results) -> None:
    for (cls, kwargs), key, result in zip(entries, keys, results):
        if result is None or result[0] != 0:
            continue  # read on its own when asked, with pyinfra's own error handling
        fact = cls()
        try:
            if callable(fact.command):
                fact.command(**kwargs)  # some facts keep their arguments for process() (Sha1File: self.path)
            value = fact.process(result[1]) if result[1] else fact.default()
        except Exception:  # noqa: BLE001
            continue
        hf.values[key] = value


def save_plan(host: Host) -> None:
    hf = getattr(host, "_siaga_facts", None)
    if not hf or not hf.asked:
        return
    path = _plan_file(host)
    sections = dict(hf.plan if hf.plan is not None else _load_plan(host))  # other deploy files' stay
    sections.update({name: [list(v) for v in asked.values()] for name, asked in hf.asked.items()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": PLAN_VERSION, "host": host.name, "sections": sections}))
        tmp.replace(path)
    except OSError as exc:
        logger.debug("siaga fact plan not saved: %s", exc)


def install() -> None:
    """Wrap pyinfra's Host.get_fact / run_shell_command / put_file once per process."""
    global _installed
    if _installed or not enabled():
        return
    _installed = True
    import gevent.event

    orig_get_fact = Host.get_fact
    orig_run = Host.run_shell_command
    orig_put = Host.put_file
    callback_states: set[int] = set()

    def read(self: Host, cls, *args, **kwargs):
        """An uncached read; its command is a fact's, so it keeps the cache."""
        hf = _facts_of(self)
        hf.fact_depth += 1
        try:
            return orig_get_fact(self, cls, *args, **kwargs)
        finally:
            hf.fact_depth -= 1

    def get_fact(self: Host, cls, *args, **kwargs):
        if not _batchable(cls) or self.state is None:
            return read(self, cls, *args, **kwargs)
        if id(self.state) not in callback_states:
            callback_states.add(id(self.state))
            self.state.add_callback_handler(_Callbacks())
        sig = _signature(self, cls, args, kwargs)
        if sig is None:
            return read(self, cls, *args, **kwargs)
        key, fact_kwargs = sig
        hf = _facts_of(self)
        section = _section(self, hf)
        try:
            plan_key = json.dumps([key[0], fact_kwargs], sort_keys=True)
            if not any(plan_key in asked for asked in hf.asked.values()):
                hf.asked.setdefault(section, {})[plan_key] = (key[0], fact_kwargs)
        except (TypeError, ValueError):
            pass
        if section not in hf.batched:
            _run_plan(self, section, orig_get_fact, key)
        if key in hf.values:
            return hf.values[key]
        if key in hf.inflight:
            value = hf.inflight[key].get()
            if value is not _MISSING:
                return value
            if key in hf.values:
                return hf.values[key]
        waiter = gevent.event.AsyncResult()
        hf.inflight[key] = waiter
        hf.fact_depth += 1
        try:
            value = orig_get_fact(self, cls, *args, **kwargs)
        except BaseException as exc:
            waiter.set_exception(exc)
            raise
        finally:
            hf.fact_depth -= 1
            hf.inflight.pop(key, None)
        if not self.state.failed_hosts or self not in self.state.failed_hosts:
            hf.values[key] = value
        waiter.set(value)
        return value

    def run_shell_command(self: Host, *args, **kwargs):
        hf = _facts_of(self)
        if hf.fact_depth == 0:
            hf.drop()  # an operation's command: what was read before may be stale now
        try:
            return orig_run(self, *args, **kwargs)
        finally:
            if hf.fact_depth == 0:
                hf.drop()

    def put_file(self: Host, *args, **kwargs):
        _facts_of(self).drop()
        try:
            return orig_put(self, *args, **kwargs)
        finally:
            _facts_of(self).drop()

    def dropping(execute):
        def wrapped(command, state, host, *args, **kwargs):
            _facts_of(host).drop()
            try:
                return execute(command, state, host, *args, **kwargs)
            finally:
                _facts_of(host).drop()
        return wrapped

    Host.get_fact = get_fact
    Host.run_shell_command = run_shell_command
    Host.put_file = put_file
    # Python callbacks and rsync change hosts without run_shell_command/put_file.
    FunctionCommand.execute = dropping(FunctionCommand.execute)
    RsyncCommand.execute = dropping(RsyncCommand.execute)
