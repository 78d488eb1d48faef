#!/usr/bin/python3
"""key-rotate '<json>': the host side of `siaga secrets rotate <ssh key>` (drc/secrets/rotate_keys.py), as root.

Installed by roles/base as /usr/local/lib/siaga/key-rotate on every host (a key's user and its
authorizing host move with a switch-over). Standard library only. The arguments (one JSON word)
hold no secret: sudo logs command lines. Keys come as ONE JSON line on stdin; a private key only
ever goes into its own 0600 file or a 0600 file in a 0700 directory under /run, removed before the
program ends. One JSON object on stdout. SOP BK-8. Modes:

- `authorize` (stdin: old, new public keys): in a root-owned keys file, a line for the new key
  beside every line of the old one, with the same options (forced command, from=, restrict).
- `unauthorize` (stdin: remove, keep): the lines of one key removed, only while a line of the other
  key stays (never leaves the path without a key).
- `install` (stdin: expect, new private keys): a private key file replaced in place, keeping its
  owner (the role's: root, postgres or the repository account), mode 0600, only when it holds the
  expected key (or already the new one).
- `holds` (stdin: old, new private keys): which of them a private key file holds.
- `prove` (no secrets): the key's real path run from this host: `pgbackrest check` as the runner's
  account (db host: to the repository; repository host: to the database), `restic snapshots` with
  the runner's settings, or an rsync dry-run with the uploads sync's ssh command.
- `logins` (stdin: named private keys): each key tried with `ssh -i` to an account: "accepted"
  (its forced command ran) or "refused" (Permission denied).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

KEY_TYPES = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                       r"(-cert-v01@openssh\.com)?$")
PRIVATE_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
RUNNER_CONFIG = "/etc/siaga/backup.json"


class Refused(Exception):
    """A request this program will not carry out (its message is the JSON answer's error)."""


def run(cmd, user=None, env=None, timeout=600):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
                           env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s: {cmd[0]}"
    return p.returncode, p.stdout, p.stderr


def tail(text, n=600):
    return text.strip()[-n:]


# --- authorized keys lines -------------------------------------------------------------------------

def split_line(line):
    """An authorized_keys line -> (options, key type, blob, comment), or None (comment, blank, odd).
    Options end at the first blank outside double quotes (command="..." holds blanks)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split(None, 2)
    if KEY_TYPES.match(words[0]):
        options, rest = "", text
    else:
        quoted, i = False, 0
        while i < len(text) and (quoted or not text[i].isspace()):
            if text[i] == "\\" and quoted:
                i += 1
            elif text[i] == '"':
                quoted = not quoted
            i += 1
        options, rest = text[:i], text[i:].strip()
    parts = rest.split(None, 2)
    if len(parts) < 2 or not KEY_TYPES.match(parts[0]):
        return None
    return options, parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def blob_of(public):
    """The base64 body of a public key line ("type blob [comment]")."""
    parts = public.split()
    if len(parts) < 2 or not KEY_TYPES.match(parts[0]):
        raise Refused("not an OpenSSH public key line")
    return parts[1]


def key_lines(text, blob):
    return [ln for ln in text.splitlines() if (p := split_line(ln)) and p[2] == blob]


def with_new_key(text, old_public, new_text):
    """The keys file's text with, after each line of the old key, the same line (same options) for
    the new key (`new_text`: "type blob comment" as the role writes it). None: no line of the old key."""
    old, out, hit = blob_of(old_public), [], False
    for ln in text.splitlines(keepends=True):
        out.append(ln)
        p = split_line(ln)
        if p and p[2] == old:
            hit = True
            out.append((f"{p[0]} " if p[0] else "") + new_text.strip() + "\n")
    return "".join(out) if hit else None


def without_key(text, public):
    blob = blob_of(public)
    return "".join(ln for ln in text.splitlines(keepends=True) if not ((p := split_line(ln)) and p[2] == blob))


def rewrite(path, text, mode=None):
    """Replace a file's content atomically, keeping its owner and mode (or setting `mode`); fsync'd:
    a crash leaves the old file or the new one, never half of one."""
    st = os.stat(path)
    tmp = f"{path}.siaga-rotate"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777 if mode is None else mode)
    os.rename(tmp, path)


def read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise Refused(f"{path} is missing on this host: run the site deploy first") from None


def mode_authorize(a, keys):
    text = read(a["file"])
    new_blob = blob_of(keys["new"])
    if key_lines(text, new_blob):
        return {"ok": True, "changed": False, "lines": len(key_lines(text, new_blob))}
    new_text = with_new_key(text, keys["old"], keys["new"])
    if new_text is None:
        raise Refused(f"{a['file']} holds no line of the old key: is the host's key another one? Nothing changed")
    rewrite(a["file"], new_text)
    return {"ok": True, "changed": True, "lines": len(key_lines(new_text, new_blob))}


def mode_unauthorize(a, keys):
    text = read(a["file"])
    if not key_lines(text, blob_of(keys["remove"])):
        return {"ok": True, "changed": False}
    if not key_lines(text, blob_of(keys["keep"])):
        raise Refused(f"{a['file']}: the key to keep has no line there; the other one is not removed (it would leave no key)")
    rewrite(a["file"], without_key(text, keys["remove"]))
    return {"ok": True, "changed": True}


# --- private keys ----------------------------------------------------------------------------------

def mode_install(a, keys):
    path, new = a["path"], keys["new"]
    if not new.lstrip().startswith(PRIVATE_BEGIN):
        raise Refused("the new key is not an OpenSSH private key")
    held = read(path)
    if held == new:
        return {"ok": True, "changed": False}
    if held.strip() != keys["expect"].strip():
        raise Refused(f"{path} holds neither the expected key nor the new one: not changed")
    rewrite(path, new, 0o600)  # a private key is its owner's only, whatever the file's mode was (SOP BK-8)
    st = os.stat(path)
    return {"ok": True, "changed": True, "mode": f"{st.st_mode & 0o777:o}", "uid": st.st_uid}


def mode_holds(a, keys):
    """Which of the given private keys a file holds: "old", "new", "other" or "absent" (never the key)."""
    try:
        with open(a["path"]) as fh:
            held = fh.read().strip()
    except FileNotFoundError:
        return {"ok": True, "holds": "absent"}
    found = [name for name in ("old", "new") if keys.get(name) and held == keys[name].strip()]
    return {"ok": True, "holds": found[0] if found else "other"}


# --- proofs -----------------------------------------------------------------------------------------

def runner_config(a):
    with open(a.get("runner_config", RUNNER_CONFIG)) as fh:
        return json.load(fh)


def prove_pgbackrest(a):
    """`pgbackrest check` as the runner runs pgBackRest here: on the database host it reaches the
    repository (pgbackrest_key), on the repository host the database (repo_key). SOP BK-2."""
    p = runner_config(a)["pgbackrest"]
    rc, so, se = run(["pgbackrest", f"--config-path={p['config_path']}", f"--stanza={p['stanza']}", "--log-level-console=warn",
                      "check"], user=p["user"], timeout=int(a.get("timeout_s", 300)))
    return {"ok": rc == 0, "detail": f"pgbackrest check as {p['user']}: " + ("ok" if rc == 0 else f"exit {rc}: {tail(se or so)}")}


def prove_restic(a):
    """`restic snapshots` with the runner's repository, password file and SFTP command (restic_key)."""
    r = runner_config(a)["restic"]
    env = {"RESTIC_REPOSITORY": r["repository"], "RESTIC_PASSWORD_FILE": r["password_file"], "RESTIC_CACHE_DIR": r["cache_dir"]}
    rc, so, se = run(["restic", "-o", f"sftp.command={r['sftp_command']}", "snapshots", "--json", "--no-lock"], env=env,
                     timeout=int(a.get("timeout_s", 300)))
    if rc != 0:
        return {"ok": False, "detail": f"restic snapshots: exit {rc}: {tail(se or so)}"}
    return {"ok": True, "detail": f"restic snapshots: {len(json.loads(so or '[]'))} snapshots listed"}


def prove_rsync(a):
    """An rsync dry-run of the uploads to a target with the sync's own ssh command (uploads_sync key).
    rrsync lets one writer in at a time: a transfer of lsyncd running now is waited out (deadline)."""
    end = time.monotonic() + float(a.get("timeout_s", 120))
    while True:
        rc, so, se = run(["rsync", "-rlpt", "--dry-run", "--timeout=60", f"--rsh={a['rsh']}", a["source"].rstrip("/") + "/",
                          a["dest"]], timeout=180)
        if rc == 0:
            return {"ok": True, "detail": f"rsync --dry-run to {a['dest']}: ok"}
        if "Permission denied" in se or time.monotonic() > end:
            return {"ok": False, "detail": f"rsync --dry-run to {a['dest']}: exit {rc}: {tail(se or so)}"}
        time.sleep(2)


PROOFS = {"pgbackrest-check": prove_pgbackrest, "restic-snapshots": prove_restic, "rsync-dry-run": prove_rsync}


def mode_prove(a, _keys):
    if a.get("how") not in PROOFS:
        raise Refused(f"unknown proof {a.get('how')!r} (proofs: {', '.join(PROOFS)})")
    return PROOFS[a["how"]](a)


def login(key_file, a):
    """'accepted' (authenticated: the forced command ran), 'refused' (publickey denied) or 'error: ...'."""
    cmd = ["ssh", "-F", "/dev/null", "-i", key_file, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={a['known_hosts']}",
           "-o", "GlobalKnownHostsFile=/dev/null", "-o", "PreferredAuthentications=publickey", "-o", "ConnectTimeout=10",
           "-n", *(["-p", str(a["port"])] if a.get("port") else []), f"{a['user']}@{a['address']}", "true"]
    rc, _, se = run(cmd, timeout=60)
    if "Permission denied" in se:
        return "refused"
    if rc != 255:
        return "accepted"
    return f"error: {tail(se, 300)}"


def mode_logins(a, keys):
    work = tempfile.mkdtemp(prefix="siaga-keys-", dir="/run" if os.path.isdir("/run") else None)
    try:
        out = {}
        for name, private in sorted(keys.items()):
            path = os.path.join(work, re.sub(r"[^a-z0-9_]", "_", name))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(private if private.endswith("\n") else private + "\n")
            out[name] = login(path, a)
        return {"ok": True, "logins": out}
    finally:
        shutil.rmtree(work, ignore_errors=True)


MODES = {"authorize": mode_authorize, "unauthorize": mode_unauthorize, "install": mode_install, "holds": mode_holds,
         "prove": mode_prove, "logins": mode_logins}
NEEDS_KEYS = ("authorize", "unauthorize", "install", "holds", "logins")


def answer(a, stdin=sys.stdin):
    try:
        if a.get("mode") not in MODES:
            return {"ok": False, "error": f"unknown mode {a.get('mode')!r} (modes: {', '.join(MODES)})"}
        keys = json.loads(stdin.readline() or "null") if a["mode"] in NEEDS_KEYS else None
        if a["mode"] in NEEDS_KEYS and not isinstance(keys, dict):
            return {"ok": False, "error": "no keys on stdin (one JSON line expected)"}
        return MODES[a["mode"]](a, keys)
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 (reported to the workstation as the answer)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: key-rotate '<json args>'  (keys: one JSON line on stdin)", file=sys.stderr)
        return 2
    print(json.dumps(answer(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
