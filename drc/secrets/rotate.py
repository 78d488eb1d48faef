"""`siaga secrets rotate NAME`: an explicit change of one secret, doing what its tool needs so that
backups and replication keep working (SOP BK-8). Never run by a deploy (roles/secret_custody.py
refuses any implicit change).

- `restic`: `restic key add` with the new password, checked that it opens the repository, the
  hosts' password files rewritten, the old key removed. Copies on the offline media made before
  still open only with the old password: it is kept in the secrets directory (`retired.json`) and on
  every host (escrow.sync_retired), and listed in every escrow written after.
- `replication`: the role's password set on the primary from its SCRAM verifier (the password never
  reaches PostgreSQL or its log), every host's .pgpass rewritten, the walsenders ended so each
  standby reconnects with the new password, and streaming checked; put back when it does not stream.

- the SSH keys (`pgbackrest_key`, `restic_key`, `repo_key`, `uploads_sync`): a new pair, the new
  public key beside the old one, the new private key installed, proven through its real path, the
  old key removed and proven refused; all put back when a proof fails (drc/secrets/rotate_keys.py).

- `repo1` (the pgBackRest repository cipher): pgBackRest cannot re-encrypt, so a new repository
  one generation further, a full backup and check into it, then the hosts switched to it; the old
  repository kept readable (its passphrase and path in the retired secrets) until `--remove-expired`
  finds its backups expired (drc/secrets/rotate_repo.py).

Each rotation is previewed with `--dry-run`, needs `--yes` or the name typed on the terminal,
leaves a record (`<records_dir>/secret-rotations.jsonl`) and reminds to write a new escrow.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import hmac
import json
import os
import socket
import uuid

from rich.console import Console

from drc.records import store as records
from drc.secrets import escrow as esc
from drc.secrets.host import call
# The pieces every rotation shares; rotate_keys and rotate_repo import them from there too.
from drc.secrets.rotation import ROTATIONS, SSH_KEYS, RotateError, confirm, new_password  # noqa: F401
from drc.site import Site, load_site
from drc.site.data_tier import data_tier_of
from roles.secret_custody import fingerprint, spec_for, workstation_value
from roles.workstation_secrets import SecretError, write_private


SUPPORTED = ("restic", "replication", *SSH_KEYS, "repo1")
NOT_YET: dict[str, str] = {}  # secrets refused by name, with why (none left)


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of a password (what pg_authid stores), RFC 5802/7677."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def plan(site: Site, name: str) -> list[str]:
    if name == "repo1":
        from drc.secrets import rotate_repo

        return rotate_repo.plan(site)
    if name in SSH_KEYS:
        from drc.secrets import rotate_keys

        return rotate_keys.plan(site, name)
    tier = data_tier_of(site)
    if name == "restic":
        from roles.backup.topology import backup_host

        return [f"on {backup_host(tier)}: restic key add with a new password; check it opens the repository",
                "rewrite /etc/siaga/backup/restic-repo1.password on every host holding it",
                "restic key remove the old key; check the new password opens the repository and the old does not",
                "this workstation: the new password in the secrets directory, the old one kept in retired.json "
                "(offline copies made before still need it; every new escrow lists it)"]
    return [f"on {tier.db_source_hosts[0]}: ALTER ROLE {tier.replication.user} with the new password's SCRAM verifier",
            f"rewrite /var/lib/postgresql/.pgpass on {', '.join(site.hosts)}",
            "end the primary's walsenders; wait until every standby streams again with the new password "
            "(put everything back if not)",
            "this workstation: the new password in the secrets directory"]


def replace_workstation(path, value: str) -> None:
    tmp = path.with_name(path.name + ".rotating")
    tmp.unlink(missing_ok=True)
    write_private(tmp, value + "\n")
    os.replace(tmp, path)


def rotate_restic(site: Site) -> dict:
    from roles.backup.layout import ETC
    from roles.backup.topology import backup_host

    tier = data_tier_of(site)
    spec = spec_for(tier, "restic")
    old = workstation_value(spec)
    if old is None:
        raise RotateError(f"{spec.path}: missing on this workstation. Fix: run the site deploy first (it fetches the hosts' copy)")
    new = new_password(spec.length)
    data = backup_host(tier)
    res = call(site, data, {"mode": "restic-rotate"}, {"old": old, "new": new}, timeout=900)
    steps = [f"{data}: {s}" for s in res.get("steps", [])]
    if not res.get("ok"):
        raise RotateError(f"{data}: {res.get('error')} (steps done: {'; '.join(steps) or 'none'})")
    # The workstation first: from here on, the repository opens only with the new password.
    esc.add_retired(site, {"key": "restic", "value": old, "fingerprint": fingerprint(old),
                           "retired_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "needed_by": "offline copies and escrows made before this time"})
    replace_workstation(spec.path, new)
    steps.append(f"workstation: {spec.path} holds the new password; the old one is in retired.json")
    for w in esc.sync_retired(site):
        steps.append(f"WARNING: {w}")
    steps.append("the retired password also kept on the hosts (/etc/siaga/backup/retired-secrets.json, 0600)")
    for h in site.hosts:
        if h != data:
            r = call(site, h, {"mode": "write-secret", "path": f"{ETC}/restic-repo1.password", "form": "text"},
                     {"old": old, "new": new}, timeout=120)
            if not r.get("ok"):
                raise RotateError(f"{h}: {r.get('error')} (steps done: {'; '.join(steps)})")
            if r.get("changed"):
                steps.append(f"{h}: {ETC}/restic-repo1.password holds the new password")
    return {"ok": True, "steps": steps, "old": fingerprint(old), "new": fingerprint(new)}


def rotate_replication(site: Site) -> dict:
    from roles.replication.standby import PASSFILE

    tier = data_tier_of(site)
    spec = spec_for(tier, "replication")
    old = workstation_value(spec)
    if old is None:
        raise RotateError(f"{spec.path}: missing on this workstation. Fix: run the site deploy first (it fetches the hosts' copy)")
    new = new_password(spec.length)
    primary, port, role = tier.db_source_hosts[0], site.firewall.postgresql_port, tier.replication.user
    steps: list[str] = []

    def set_role(password: str) -> dict:
        return call(site, primary, {"mode": "role-password", "role": role, "port": port}, {"verifier": scram_verifier(password)}, 120)

    def pgpass(frm: str, to: str) -> list[str]:
        bad = []
        for h in site.hosts:
            r = call(site, h, {"mode": "write-secret", "path": PASSFILE, "form": "pgpass"}, {"old": frm, "new": to}, 120)
            if not r.get("ok"):
                bad.append(f"{h}: {r.get('error')}")
        return bad

    r = set_role(new)
    if not r.get("ok"):
        raise RotateError(f"{primary}: ALTER ROLE {role} failed: {r.get('error')}; nothing changed")
    steps.append(f"{primary}: role {role} has the new password")
    bad = pgpass(old, new)
    check = call(site, primary, {"mode": "replication-restart", "port": port, "standbys": len(tier.db_standby_hosts),
                                 "timeout_s": 120}, None, 240) if not bad else {"ok": False, "error": "; ".join(bad)}
    if not check.get("ok"):
        back = [*pgpass(new, old), *([] if set_role(old).get("ok") else [f"{primary}: ALTER ROLE back failed"])]
        call(site, primary, {"mode": "replication-restart", "port": port, "standbys": len(tier.db_standby_hosts), "timeout_s": 120},
             None, 240)
        raise RotateError(f"replication did not stream with the new password ({check.get('error')}); put back to the old "
                          f"password{': ' + '; '.join(back) if back else ''}")
    steps.append(f"{PASSFILE} on {', '.join(site.hosts)} holds the new password")
    steps.append(f"streaming again with the new password: {', '.join(check.get('streaming') or [])}")
    replace_workstation(spec.path, new)
    steps.append(f"workstation: {spec.path} holds the new password")
    return {"ok": True, "steps": steps, "old": fingerprint(old), "new": fingerprint(new)}


def rotate_repo1(site: Site) -> dict:
    from drc.secrets import rotate_repo

    return rotate_repo.rotate(site)


def cmd_rotate(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    name = args.name
    if getattr(args, "remove_expired", False):
        from drc.secrets import rotate_repo

        return rotate_repo.cmd_remove_expired(site, args, console)
    if name in NOT_YET:
        console.print(f"[red]refused:[/red] {name}: {NOT_YET[name]}", highlight=False)
        return 2
    try:
        spec_for(data_tier_of(site), name)
    except SecretError as exc:
        console.print(f"[red]error:[/red] {exc} (rotatable: {', '.join(SUPPORTED)})", highlight=False)
        return 2
    steps = plan(site, name)
    if args.dry_run:
        out = {"ok": True, "dry_run": True, "name": name, "plan": steps}
        if args.json:
            console.file.write(json.dumps(out, indent=2) + "\n")
        else:
            console.print(f"would rotate {name}:", highlight=False)
            for s in steps:
                console.print(f"  - {s}", highlight=False, markup=False)
        return 0
    started = dt.datetime.now().astimezone()
    try:
        confirm(args, name)
        if name in SSH_KEYS:
            from drc.secrets import rotate_keys

            res = rotate_keys.rotate(site, name)
        else:
            res = {"restic": rotate_restic, "replication": rotate_replication, "repo1": rotate_repo1}[name](site)
    except (RotateError, SecretError) as exc:
        res = {"ok": False, "error": str(exc)}
    rec = {"id": f"rotate-{uuid.uuid4().hex[:12]}", "name": name, "start": started.isoformat(timespec="seconds"),
           "end": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "by": f"{getpass.getuser()}@{socket.gethostname()}",
           "result": "success" if res.get("ok") else "failure", "steps": res.get("steps", []), "error": res.get("error"),
           "old": res.get("old"), "new": res.get("new")}
    records.append_new(records.records_dir(site) / ROTATIONS, [rec])
    reminder = ("Write a new escrow now (siaga secrets escrow --out DIR --copy-to-medium) and print its sheet: "
                "the escrows made before hold the old secret")
    if name in SSH_KEYS:  # the escrow holds no SSH key: the offline copies are read without one
        reminder = "No new escrow needed (it holds no SSH key); the next site deploy changes nothing"
    if args.json:
        console.file.write(json.dumps({**res, "record": rec, "reminder": reminder}, indent=2) + "\n")
    else:
        for s in res.get("steps", []):
            console.print(f"  - {s}", highlight=False, markup=False)
        if res.get("ok"):
            console.print(f"[green]{name} rotated[/green] ({res['old']} -> {res['new']}). {reminder}", highlight=False)
        else:
            console.print(f"[red]rotation of {name} failed:[/red] {res.get('error')}", highlight=False)
    return 0 if res.get("ok") else 1


def register(sub, common) -> None:
    r = sub.add_parser("rotate", help="rotate one secret explicitly, doing what its tool needs (BK-8)",
                       description=f"Rotatable: {', '.join(SUPPORTED)}. Exit 1 when the rotation failed, 2 when refused.")
    r.add_argument("name", help=f"the secret ({', '.join(SUPPORTED)})")
    r.add_argument("--dry-run", action="store_true", help="show what would be done, change nothing")
    r.add_argument("--yes", action="store_true", help="confirm without typing the name")
    r.add_argument("--remove-expired", action="store_true",
                   help="with repo1: remove the retired repositories whose backups have expired (their passphrases stay)")
    common(r)
    r.set_defaults(func=cmd_rotate)
