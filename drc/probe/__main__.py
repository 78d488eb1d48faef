"""`python -m drc.probe run|watch|check ...`: the probe's commands without the rest of siaga's."""

import argparse
import sys

from rich.console import Console

from drc.probe.command import register
from drc.site import SiteError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drc.probe")
    register(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(["probe", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args, Console())
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
