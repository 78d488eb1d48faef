"""Run pyinfra deploy files through pyinfra's Python API and write what each operation did.

    python -m drc.hosts.run_deploy --site SITE --result RESULT.json [--dry] [--diff] [--limit H]... DEPLOY.py...

This is the child process behind `drc.hosts.deploy.run_deploy` and `siaga deploy`: pyinfra runs on
gevent and patches the standard library (as its CLI does), so it never runs inside the caller.
The inventory is built from the site file (drc.hosts.inventory), the deploy files are loaded as
pyinfra's CLI loads them (operation order from the lines of the deploy code), and the result is
read from pyinfra's state, per host and per operation, never from its printed tables:

    {"dry": false, "error": null, "hosts": {"primary": "ok"|"failed"|"unreachable", ...},
     "operations": [{"host": "primary", "op": "Install sudo", "state": "changed"}, ...]}

States: applied: "changed", "no change", "error", "error (ignored)", "not run" (the host stopped
before it); --dry: "will change", "will change if" (only when an earlier change fires it, e.g.
a reload after a new file), "no change". The human-readable log (pyinfra's, with its error messages)
goes to stderr. Exit status: 0 all hosts ok, 1 a host or the deploy failed, 2 bad input (nothing
was contacted).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from fnmatch import fnmatch
from pathlib import Path

APPLIED_STATES = ("changed", "no change", "error", "error (ignored)", "not run")
DRY_STATES = ("will change", "will change if", "no change")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m drc.hosts.run_deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("--site", required=True, help="site file (YAML)")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    p.add_argument("--dry", action="store_true", help="change nothing; report what would change")
    p.add_argument("--diff", action="store_true", help="show the differences of changed files")
    p.add_argument("--limit", action="append", default=[], help="host or group name (or glob); repeatable")
    p.add_argument("deploys", nargs="+", help="deploy files (.py)")
    return p.parse_args(argv)


def op_name(meta) -> str:
    """An operation's name as pyinfra shows it: its name, with its arguments when it was auto-named."""
    name = sorted(meta.names)[0] if meta.names else "(unnamed operation)"
    return f"{name} ({', '.join(str(a) for a in meta.args)})" if meta.args else name


def select_hosts(groups: dict[str, list[tuple[str, dict]]], limits: list[str]) -> tuple[list[str] | None, str | None]:
    """--limit patterns -> host names (None: all), or an error naming the hosts and groups."""
    if not limits:
        return None, None
    names = [name for entries in groups.values() for name, _ in entries]
    chosen: list[str] = []
    for pattern in limits:
        matched = [n for n, _ in groups[pattern]] if pattern in groups else [n for n in names if fnmatch(n, pattern)]
        if not matched:
            return None, (f"--limit {pattern!r} matches no host of the site (hosts: {', '.join(names)}; "
                          f"groups: {', '.join(groups)})")
        chosen += [n for n in matched if n not in chosen]
    return chosen, None


def workstation_files_problem(site, site_path: Path) -> str | None:
    """The connection's key (and known_hosts) file must exist on this workstation before any host
    is contacted; `siaga check` does not ask, as it may run where the keys are not."""
    c = site.connection
    for key, path, fix in (("connection.key_file", c.key_file, "point it at your private SSH key"),
                           ("connection.known_hosts_file", c.known_hosts_file, "point it at the file with the hosts' keys")):
        if path is not None and not Path(path).expanduser().is_file():
            return f"{site_path}: key '{key}': no such file {Path(path).expanduser()} on this workstation. Fix: {fix}."
    return None


def collect(state, dry: bool) -> tuple[dict[str, str], list[dict]]:
    """Per host: ok / failed / unreachable; per host and operation (in pyinfra's order): its state."""
    from pyinfra.context import ctx_host, ctx_state

    activated = state.activated_hosts
    hosts = {}
    for host in state.inventory:
        if not state.is_host_in_limit(host):
            continue
        hosts[host.name] = "unreachable" if host not in activated else "failed" if host in state.failed_hosts else "ok"
    ops = []
    for op_hash in state.get_op_order():
        name = op_name(state.get_op_meta(op_hash))
        for host in state.inventory:
            if host not in activated or op_hash not in state.ops[host]:
                continue
            data = state.get_op_data_for_host(host, op_hash)
            meta = data.operation_meta
            record = {"host": host.name, "op": name}
            if dry:
                with ctx_state.use(state), ctx_host.use(host):
                    change = meta.will_change
                record["state"] = ("will change if" if data.global_arguments.get("_if") else "will change") if change else "no change"
            elif not meta.is_complete():
                record["state"] = "not run"
            elif meta.did_succeed():
                record["state"] = "changed" if meta.did_change() else "no change"
            else:
                record["state"] = "error (ignored)" if data.global_arguments.get("_ignore_errors") else "error"
                if meta.stderr_lines:
                    record["stderr"] = "\n".join(meta.stderr_lines[-20:])
            ops.append(record)
    return hosts, ops


def log_detected_changes(logger, ops: list[dict]) -> None:
    """With --dry: what would change, per operation, as the log's last section."""
    by_op: dict[str, dict[str, list[str]]] = {}
    for r in ops:
        if r["state"] != "no change":
            by_op.setdefault(r["op"], {}).setdefault(r["state"], []).append(r["host"])
    logger.info("--> Detected changes:")
    if not by_op:
        logger.info("none")
    for name, states in by_op.items():
        logger.info(f"{name}: " + "; ".join(f"{s} on {', '.join(h)}" for s, h in states.items()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict = {"dry": args.dry, "error": None, "hosts": {}, "operations": []}

    def finish(code: int, error: str | None = None) -> int:
        result["error"] = error
        Path(args.result).write_text(json.dumps(result, indent=1))
        return code

    # Bad input is refused before pyinfra is even imported: no host is contacted.
    from drc.hosts.deploy import deploys_dir
    from drc.hosts.inventory import site_groups
    from drc.site import SiteError, load_site

    site_path = Path(args.site).expanduser().resolve()
    try:
        site = load_site(site_path)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return finish(2, str(exc))
    groups = site_groups(site, site_path)
    deploys = [str(Path(d).resolve()) for d in args.deploys]
    missing = [d for d in deploys if not Path(d).is_file() or not d.endswith(".py")]
    if missing:
        msg = f"no deploy file: {', '.join(missing)}"
        print(f"error: {msg}", file=sys.stderr)
        return finish(2, msg)
    limit, problem = select_hosts(groups, args.limit)
    problem = problem or workstation_files_problem(site, site_path)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return finish(2, problem)

    # pyinfra as its CLI runs it: gevent-patched, CLI mode (operation order from the deploy files'
    # lines, local.include), its log format on stderr.
    from gevent import monkey

    monkey.patch_all()
    os.environ.setdefault("PYINFRA_PROGRESS", "off")

    import click
    import pyinfra
    from pyinfra import logger
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops
    from pyinfra.api.output import set_echo, set_formatter
    from pyinfra.api.state import StateStage
    from pyinfra.context import ctx_config, ctx_inventory, ctx_state
    from pyinfra_cli.exceptions import UnexpectedExternalError
    from pyinfra_cli.log import setup_logging
    from pyinfra_cli.util import load_deploy_file

    from roles.upload_staging import STAGING_DIR

    pyinfra.is_cli = True
    from drc.hosts import pyinfra_speed

    pyinfra_speed.install()  # same answers, less CPU per operation and host (drc/hosts/pyinfra_speed.py)
    sys.stdout.reconfigure(line_buffering=True)  # diffs (stdout) stay in order with the log (stderr)
    set_formatter(click.style)
    set_echo(click.echo)
    setup_logging(logging.INFO)

    state = State(check_for_changes=args.dry)
    # Relative paths in deploy code (local.include("deploys/..."), files.put(src="...")) resolve
    # against the folder holding siaga's deploys/, whether a source checkout or site-packages.
    state.cwd = str(deploys_dir().parent)
    ctx_state.set(state)
    config = Config()
    ctx_config.set(config)
    config.DIFF = args.diff
    # Every deploy file this runner loads, siaga's or not, stages uploads where the admin's SFTP can
    # write (roles/upload_staging.py: sudo's $TMPDIR is private with libpam-tmpdir).
    config.TEMP_DIR = STAGING_DIR
    config.lock_current_state()
    names = [n for entries in groups.values() for n, _ in entries]
    inventory = Inventory((names, {}), **{g: (entries, {}) for g, entries in groups.items()})
    ctx_inventory.set(inventory)
    state.init(inventory, config, initial_limit=None if limit is None else [inventory.get_host(n) for n in limit])

    code, error = 0, None
    try:
        logger.info("--> Connecting to hosts...")
        state.set_stage(StateStage.Connect)
        connect_all(state)
        state.set_stage(StateStage.Prepare)
        logger.info("--> Preparing operations...")
        for i, filename in enumerate(deploys):
            config.lock_current_state()
            logger.info(f"Loading: {filename}")
            state.current_op_file_number = i
            load_deploy_file(state, filename)
            config.reset_locked_state()
        if not args.dry:
            logger.info("--> Beginning operation run...")
            state.set_stage(StateStage.Execute)
            run_ops(state)
    except UnexpectedExternalError as exc:
        inner = exc.exception
        error = f"{type(inner).__name__} in {exc.filename}: {inner}"
        logger.error(f"--> An exception occurred in: {exc.filename}")
        logger.error("".join(traceback.format_exception(type(inner), inner, getattr(inner, "_traceback", None))))
    except PyinfraError as exc:
        error = str(getattr(exc, "message", None) or exc)
        logger.error(f"--> pyinfra error: {error}")
    except Exception as exc:  # a defect in siaga or pyinfra: shown in full, the run is a failure
        error = f"{type(exc).__name__}: {exc}"
        logger.error(traceback.format_exc())
    finally:
        try:
            result["hosts"], result["operations"] = collect(state, args.dry)
        finally:
            if state.initialised:
                disconnect_all(state)
    if args.dry and error is None:
        log_detected_changes(logger, result["operations"])
    if error or any(s != "ok" for s in result["hosts"].values()):
        code = 1
    return finish(code, error)


if __name__ == "__main__":
    sys.exit(main())
