"""The `siaga` command."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from drc.site import SiteError

# Modules that add a command: each defines register(subparsers) and sets func on its parser.
COMMAND_MODULES: tuple[str, ...] = ("drc.status", "drc.backup")

console = Console()
err_console = Console(stderr=True)


def _lab_name(args: argparse.Namespace) -> str:
    from drc import lab

    return args.lab or lab.default_name()


def cmd_lab(args: argparse.Namespace) -> int:
    from drc import lab

    the_lab = lab.Lab(_lab_name(args))
    if args.lab_cmd == "up":
        the_lab.up()
        lab.print_status(the_lab, console)
    elif args.lab_cmd == "down":
        the_lab.down()
    elif args.lab_cmd == "status":
        return 0 if lab.print_status(the_lab, console) else 1
    elif args.lab_cmd == "wan":
        the_lab.set_wan(cut=args.action == "cut")
        console.print(f"WAN between sites: {'cut' if args.action == 'cut' else 'healed'}")
    elif args.lab_cmd == "media":
        m = the_lab.media_attach(args.host) if args.action == "attach" else the_lab.media_detach()
        console.print(f"media {args.action}ed: {m}" if m else "media: not attached")
    elif args.lab_cmd == "restart":
        the_lab.restart_host(args.host)
        console.print(f"{args.host}: rebooted")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from drc.check import run_check

    return run_check(args.site or _default_site(args), console)


def _default_site(args: argparse.Namespace) -> str:
    from drc import lab

    return str(lab.Lab(_lab_name(args)).site_file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siaga", description="LPSE primary/DRC automation: lab, checks, runbooks.")
    p.add_argument("--lab", help="lab name (default: $SIAGA_LAB or 'lab')")
    sub = p.add_subparsers(dest="cmd", required=True)

    lab_p = sub.add_parser("lab", help="the local two-site lab of real hosts")
    lab_sub = lab_p.add_subparsers(dest="lab_cmd", required=True)
    lab_sub.add_parser("up", help="raise the lab (idempotent; cleans leftovers of killed runs)")
    lab_sub.add_parser("down", help="remove everything this lab created")
    lab_sub.add_parser("status", help="show the lab hosts and whether they answer")
    wan = lab_sub.add_parser("wan", help="cut or heal the WAN between the two sites")
    wan.add_argument("action", choices=["cut", "heal"])
    restart = lab_sub.add_parser("restart", help="reboot one lab host (its network state is lost, as in a real reboot)")
    restart.add_argument("host")
    media = lab_sub.add_parser("media", help="plug the lab's removable disk into a host, or unplug it (offline backups)")
    media.add_argument("action", choices=["attach", "detach"])
    media.add_argument("--host", default="drc", help="host it is plugged into (default %(default)s)")
    lab_p.set_defaults(func=cmd_lab)

    check = sub.add_parser("check", help="validate a site file and print the plan per host, touching nothing")
    check.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    check.set_defaults(func=cmd_check)

    # Each further command lives in its own module with `register(subparsers)`.
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def _lab_error() -> type[Exception]:
    from drc.lab import LabError

    return LabError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SiteError, _lab_error()) as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
