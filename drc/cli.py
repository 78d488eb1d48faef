"""The `siaga` command: parses the command line and dispatches; the work is in each command's package."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from drc.site import SiteError

# Each command's module defines register(subparsers) and sets func(args, console) on its parser.
COMMAND_MODULES: tuple[str, ...] = ("drc.lab.command", "drc.site.check", "drc.hosts.command", "drc.status.command",
                                     "drc.backup.command", "drc.secrets.command", "drc.runbooks.command", "drc.runbooks.fence_command",
                                     "drc.probe.command", "drc.workstation.command", "drc.logbook.command",
                                     "drc.capacity.command")

console = Console()
err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siaga", description="LPSE primary/DRC automation: lab, checks, deploys, status, backups.")
    p.add_argument("--lab", help="lab name (default: $SIAGA_LAB or 'lab'); its site file is the default SITE")
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def _default_site(args: argparse.Namespace) -> str:
    from drc.lab.command import default_site_file

    return default_site_file(args.lab)


def _lab_error() -> type[Exception]:
    from drc.lab.lab import LabError

    return LabError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "site" in args and not args.site:
        args.site = _default_site(args)
    from drc.workstation.mirror import after_command

    try:
        # Issue 11 point 4: afterwards the records and site file go to the DRC's copy (never fails the command).
        with after_command(args, err_console):
            return args.func(args, console)
    except (SiteError, _lab_error()) as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
