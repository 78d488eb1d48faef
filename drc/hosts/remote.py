"""Reaching the site's hosts from the admin workstation: one way, used by every command.

Fabric over SSH with the site's connection data (`connection:` in the site file), strict host key
checking against the site's known_hosts (an unknown key is refused, never learned), short connect
timeouts, and a parallel runner with daemon threads and a deadline, so a host that does not answer
is reported, never a hang. `siaga status` and `siaga backup` use it; the programs they run on
the hosts are files the roles install (drc/hostside), run by `run_program`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, TypeVar

from drc.hostside import program
from drc.site import Site

CONNECT_TIMEOUT_S = 5.0

T = TypeVar("T")


def connection(site: Site, host: str, timeout: float = CONNECT_TIMEOUT_S):
    """A Fabric Connection to one site host (not yet opened)."""
    from fabric import Config, Connection
    from paramiko import RejectPolicy

    c = site.connection
    conn = Connection(
        host=str(site.hosts[host].address), user=c.user, port=c.port, connect_timeout=int(max(1, timeout)),
        config=Config(overrides={"load_ssh_configs": False}),
        connect_kwargs={"key_filename": str(c.key_file), "allow_agent": False, "look_for_keys": False,
                        "banner_timeout": timeout, "auth_timeout": timeout},
    )
    # Fabric trusts unknown host keys by default; siaga must not talk to a spoofed server.
    conn.client.set_missing_host_key_policy(RejectPolicy())
    if c.known_hosts_file:
        conn.client.load_host_keys(str(c.known_hosts_file))
    else:
        conn.client.load_system_host_keys()
    return conn


def why(exc: BaseException) -> str:
    """One line saying why a host could not be reached or a command not run."""
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass
class Result:
    """What one command on one host gave. reachable False: it did not run (error says why)."""

    host: str
    reachable: bool
    exited: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.exited == 0


# Open connections kept while `reused_connections()` is active: (site, host) -> (Connection, Lock).
_pool: dict[tuple[str, str], tuple] | None = None
_pool_lock = threading.Lock()


@contextmanager
def reused_connections():
    """Within this block `run` keeps one SSH connection per host and reuses it: a runbook's many
    short commands would otherwise pay an SSH handshake each (0.3 s or more), and a switch-over's
    outage is made of them. A connection that fails is dropped; the next command reconnects."""
    global _pool
    with _pool_lock:
        outer, _pool = _pool, (_pool if _pool is not None else {})
    try:
        yield
    finally:
        if outer is None:
            with _pool_lock:
                pool, _pool = _pool, None
            for conn, _ in (pool or {}).values():
                with contextlib.suppress(Exception):
                    conn.close()


def _pooled(site: Site, host: str, connect_timeout: float):
    key = (site.site, host)
    with _pool_lock:
        if _pool is None:
            return None
        if key not in _pool:
            _pool[key] = (connection(site, host, connect_timeout), threading.Lock())
        return _pool[key]


def _drop(site: Site, host: str) -> None:
    with _pool_lock:
        entry = _pool.pop((site.site, host), None) if _pool is not None else None
    if entry:
        with contextlib.suppress(Exception):
            entry[0].close()


def run(site: Site, host: str, command: str, timeout: float, connect_timeout: float = CONNECT_TIMEOUT_S) -> Result:
    """Run one shell command (already quoted) on a host; never raises for a host problem."""
    pooled = _pooled(site, host, connect_timeout)
    try:
        if pooled:
            conn, lock = pooled
            with lock:
                r = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        else:
            with connection(site, host, connect_timeout) as conn:
                r = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 (any failure to reach a host is reported, with why)
        if pooled:
            _drop(site, host)
        return Result(host, reachable=False, error=why(exc))
    return Result(host, reachable=True, exited=r.exited, stdout=r.stdout, stderr=r.stderr)


# What run_program's shell wrapper says when a host program is not installed (never a traceback).
MISSING_EXIT = 127
MISSING_MARK = "siaga: host program missing:"


def run_with_input(site: Site, host: str, command: str, data: str, timeout: float) -> Result:
    """One command with `data` on its stdin, sent at once over the SSH channel and closed (Invoke's
    stdin pump sends one byte per 10 ms: a few kB of secrets took tens of seconds). Never raises for
    a host problem. The data is in no command line and no log (SOP BK-8)."""
    out, err = bytearray(), bytearray()
    try:
        with connection(site, host) as conn:
            conn.open()
            chan = conn.client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.settimeout(timeout)
            chan.exec_command(command)
            chan.sendall(data.encode())
            chan.shutdown_write()
            deadline = time.monotonic() + timeout
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready():
                    break
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"{command.split()[0]}: no end after {timeout:g} s")
                else:
                    time.sleep(0.01)
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            exited = chan.recv_exit_status()
    except Exception as exc:  # noqa: BLE001 (any failure to reach a host is reported, with why)
        return Result(host, reachable=False, error=why(exc))
    return Result(host, reachable=True, exited=exited, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))


def program_command(name: str, args: dict | None = None, sudo: bool = True) -> str:
    """The shell command that runs a host program (drc/hostside) with its arguments as one JSON word,
    or says that it is missing. The arguments are never secret (sudo logs command lines)."""
    path = shlex.quote(program(name).path)
    argv = f" {shlex.quote(json.dumps(args))}" if args is not None else ""
    return (f"if [ ! -x {path} ]; then echo {shlex.quote(MISSING_MARK)} {path} >&2; exit {MISSING_EXIT}; fi; "
            f"{'sudo -n ' if sudo else ''}{path}{argv}")


def program_missing(result: Result, name: str) -> str | None:
    """'host program X missing on HOST: run the site deploy' when the program was not there."""
    if result.reachable and result.exited == MISSING_EXIT and MISSING_MARK in result.stderr:
        p = program(name)
        return (f"host program {p.name} missing on {result.host} ({p.path}, shipped by roles/{p.role}): "
                "run the site deploy")
    return None


def run_program(site: Site, host: str, name: str, args: dict | None, timeout: float,
                connect_timeout: float = CONNECT_TIMEOUT_S, sudo: bool = True) -> Result:
    """Run one host program (drc/hostside, installed by the roles in /usr/local/lib/siaga) on a host.
    A missing program gives a Result (not ok) whose error says so and how to fix it."""
    r = run(site, host, program_command(name, args, sudo), timeout, connect_timeout)
    missing = program_missing(r, name)
    if missing:
        return Result(host, reachable=True, exited=r.exited, stdout=r.stdout, stderr=r.stderr, error=missing)
    return r


def parallel(hosts: list[str], work: Callable[[str], T], deadline_s: float, on_timeout: Callable[[str], T]) -> dict[str, T]:
    """work(host) for every host at once; a host without an answer by the deadline gets
    on_timeout(host). Daemon threads: one stuck in the network never keeps siaga from exiting."""
    results: dict[str, T] = {}
    lock = threading.Lock()

    def one(name: str) -> None:
        value = work(name)
        with lock:
            results[name] = value

    threads = [threading.Thread(target=one, args=(name,), daemon=True, name=f"siaga-{name}") for name in hosts]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline_s
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    with lock:
        return {name: results[name] if name in results else on_timeout(name) for name in hosts}
