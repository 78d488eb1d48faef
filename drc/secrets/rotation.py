"""What every `siaga secrets rotate` shares: the record file, the SSH keys' names, the error, the
confirmation, new passwords. The command is drc/secrets/rotate.py; drc/secrets/rotate_keys.py and
rotate_repo.py do the SSH keys and the repository cipher (SOP BK-8)."""

from __future__ import annotations

import argparse
import secrets
import sys

from roles.workstation_secrets import ALPHABET

ROTATIONS = "secret-rotations.jsonl"
SSH_KEYS = ("pgbackrest_key", "restic_key", "repo_key", "uploads_sync")  # drc/secrets/rotate_keys.py


class RotateError(RuntimeError):
    pass


def new_password(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def confirm(args: argparse.Namespace, name: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise RotateError("not confirmed: pass --yes, or run it on a terminal and type the secret's name")
    typed = input(f"Type '{name}' to rotate it: ")
    if typed.strip() != name:
        raise RotateError("not confirmed: nothing changed")
