"""`siaga lab ...`: raise, inspect, break and remove the local lab."""

from __future__ import annotations

import argparse

from rich.console import Console

from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS


def register(sub: argparse._SubParsersAction) -> None:
    lab_p = sub.add_parser("lab", help="the local two-site lab of real hosts")
    lab_sub = lab_p.add_subparsers(dest="lab_cmd", required=True)
    up = lab_sub.add_parser("up", help="raise the lab (idempotent; cleans leftovers of killed runs)")
    up.add_argument("--servers", type=int, default=None,
                    help="servers across the two sites (default 2: primary, drc); the extra ones (primary2, drc2, ...) "
                         "are in the lab's site-servers.yaml for remote-access deploys, e.g. the scale benchmark")
    up.add_argument("--platform", choices=sorted(PLATFORMS), default=None,
                    help=f"Debian release of every host (default {DEFAULT_PLATFORM}, or what the lab was raised with); "
                         "recorded in the lab state and its site file")
    lab_sub.add_parser("down", help="remove everything this lab created")
    lab_sub.add_parser("status", help="show the lab hosts and whether they answer")
    wan = lab_sub.add_parser("wan", help="cut or heal the WAN between the two sites")
    wan.add_argument("action", choices=["cut", "heal"])
    restart = lab_sub.add_parser("restart", help="reboot one lab host (its network state is lost, as in a real reboot)")
    restart.add_argument("host")
    media = lab_sub.add_parser("media", help="plug one of the lab's removable media into a host, or unplug it (offline backups)",
                               description="One image per label; attaching one unplugs any other. A new medium is blank: "
                                           "label it with `siaga backup offline --init-medium LABEL`.")
    media.add_argument("action", choices=["attach", "detach"])
    media.add_argument("--label", help="the medium (e.g. OFFLINE-B); attach: default OFFLINE-A; detach: default whichever is attached")
    media.add_argument("--host", default="drc", help="host it is plugged into (default %(default)s)")
    lab_p.set_defaults(func=cmd_lab)


def cmd_lab(args: argparse.Namespace, console: Console) -> int:
    from drc.lab.lab import Lab, default_name, print_status

    the_lab = Lab(args.lab or default_name())
    if args.lab_cmd == "up":
        the_lab.up(servers=args.servers, platform=args.platform)
        print_status(the_lab, console)
    elif args.lab_cmd == "down":
        the_lab.down()
    elif args.lab_cmd == "status":
        return 0 if print_status(the_lab, console) else 1
    elif args.lab_cmd == "wan":
        the_lab.set_wan(cut=args.action == "cut")
        console.print(f"WAN between sites: {'cut' if args.action == 'cut' else 'healed'}")
    elif args.lab_cmd == "media":
        m = the_lab.media_attach(args.host, label=args.label or "OFFLINE-A") if args.action == "attach" else the_lab.media_detach(args.label)
        console.print(f"media {args.action}ed: {m}" if m else "media: not attached")
    elif args.lab_cmd == "restart":
        the_lab.restart_host(args.host)
        console.print(f"{args.host}: rebooted")
    return 0


def default_site_file(lab_name: str | None) -> str:
    """The site file of a lab: what commands use when no site file is named."""
    from drc.lab.lab import Lab, default_name

    return str(Lab(lab_name or default_name()).site_file)
