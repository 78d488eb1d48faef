#!/usr/bin/python3
"""secrets-host '<json>': the parts of `siaga secrets` that run ON a host, as root.

Installed by roles/backup as /usr/local/lib/siaga/secrets-host. Standard library only. The
arguments (one JSON word) hold no secret: sudo logs command lines. The secrets come as ONE JSON
line on stdin and go only into 0600 files inside a 0700 directory under /run, removed before the
program ends. One JSON object on stdout. Modes:

- `offline-restore` (the host where the offline medium is attached): from one copy on the medium
  (the newest whose manifest says verified, or the one named), the database restored with
  pgBackRest into `<target>/pg` (a scratch cluster, started on another port with its socket in a
  private directory, its tables counted, stopped) and the restic sets restored into
  `<target>/files/<set>` (`restic restore --verify`). Refuses before writing anything when the
  medium is not a mount point, the copy is not verified, the target is not empty or overlaps a
  production path, or the port is production's. SOP BK-4, BK-8, EM-3.7.
- `hash-files` (any host): sha256 of the named files last modified and changed before a cutoff
  (production's own files, to compare a restore with).
- `restic-rotate` (the host running the restic sets): a new restic key with the new password,
  checked, the host's password file rewritten, then the old key removed and the repository opened
  again with the new one.
- `write-secret`: one host file holding a secret replaced in place (same owner and mode), only
  when it holds the old value (text, an `ini:key` line, or a .pgpass's replication lines).
- `role-password` (the primary): a role's password set from its SCRAM verifier (the password
  itself never reaches PostgreSQL nor its log), then replication checked.
- `file-state` / `file-put` (any host): sha256 of files; one file written whole, only when it
  holds what the caller expects (compare and swap); a secret in its text comes on stdin alone.
- `repo1-prepare`, `repo1-backup`, `repo1-check`, `repo1-discard` (the repository host): the steps
  of `siaga secrets rotate repo1` (drc/secrets/rotate_repo.py): a new pgBackRest repository made
  with its own config, a full backup into it recorded in the backup log and `pgbackrest check`,
  the state of a repository (info, check, verify), and a repository or a config directory removed.
"""

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time

NAME = re.compile(r"^\d{8}T\d{6}$")
SUBDIR = "siaga-offline"


class Refused(Exception):
    """A request this program will not carry out (its message is the JSON answer's error)."""


def run(cmd, user=None, env=None, timeout=3600, stdin=None):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", input=stdin,
                       stdin=None if stdin is not None else subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def tail(text, n=1500):
    return text.strip()[-n:]


def private_dir(owner=None):
    """A 0700 directory under /run for the secret files of this run (tmpfs: never on a disk)."""
    d = tempfile.mkdtemp(prefix="siaga-secrets-", dir="/run" if os.path.isdir("/run") else None)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    return d


def secret_file(directory, name, text, owner=None):
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


# --- the offline medium ---------------------------------------------------------------------------

def medium(mount_point):
    if not os.path.ismount(mount_point):
        raise Refused(f"the offline medium is not attached: {mount_point} is not a mount point. Fix: attach it "
                      "(in the lab: siaga lab media attach) and mount it there")
    root = os.path.join(mount_point, SUBDIR)
    if not os.path.isdir(root):
        raise Refused(f"{mount_point} holds no siaga offline copies ({root} missing): is it the right medium?")
    try:
        with open(os.path.join(root, "medium.json")) as fh:
            label = json.load(fh)
    except (OSError, ValueError) as exc:
        raise Refused(f"the medium at {mount_point} has no readable label ({root}/medium.json: {exc}). Fix: label it with "
                      "`siaga backup offline --init-medium LABEL` (its copies stay), then run this again") from None
    return root, label


def manifests(root):
    out = []
    for name in sorted(os.listdir(root)):
        if NAME.match(name) and os.path.isdir(os.path.join(root, name)):
            try:
                with open(os.path.join(root, name, "manifest.json")) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                out.append({"name": name, "verified": False, "error": "no readable manifest"})
    return out


def choose_copy(copies, wanted=None):
    """The copy to restore from: the one named (it must be verified), else the newest verified one."""
    if wanted:
        found = [c for c in copies if c.get("name") == wanted]
        if not found:
            raise Refused(f"no copy {wanted} on the medium (copies: {', '.join(c['name'] for c in copies) or 'none'})")
        if found[0].get("verified") is not True:
            raise Refused(f"copy {wanted} is not verified (its manifest says verified: {found[0].get('verified')}): refused")
        return found[0]
    good = [c for c in copies if c.get("verified") is True]
    if not good:
        raise Refused("no verified copy on the medium: nothing to restore from")
    return good[-1]


def overlap(path, production):
    p = os.path.realpath(path)
    for prod in production:
        q = os.path.realpath(prod)
        if p == q or p.startswith(q + "/") or q.startswith(p + "/"):
            return q
    return None


def preflight_target(target, production):
    hit = overlap(target, production)
    if hit:
        raise Refused(f"target {target} overlaps production path {hit}: refused")
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise Refused(f"target {target} exists and is not empty: refused (restore into an empty or new directory)")


def pgbackrest_conf(a, copy_dir, secrets, work):
    return "\n".join([
        "[global]", f"repo1-path={copy_dir}/pgbackrest", f"repo1-cipher-type={secrets['cipher_type']}",
        f"repo1-cipher-pass={secrets['cipher_pass']}", f"lock-path={work}/lock", f"spool-path={work}/spool",
        "log-level-file=off", "log-level-console=warn", "",
        f"[{a['stanza']}]", f"pg1-path={a['target']}/pg", ""])


def table_counts_sql():
    return ("SELECT format('%I.%I', table_schema, table_name), (xpath('/row/c/text()', query_to_xml(format("
            "'SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text "
            "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")


def psql(sql, sock, port, db, user):
    return run(["psql", "-XAtq", "-F", "|", "-h", sock, "-p", str(port), "-U", "postgres", "-d", db, "-c", sql], user=user, timeout=600)


def restore_db(a, copy_dir, secrets, res):
    owner = pwd.getpwuid(os.stat(os.path.join(copy_dir, "pgbackrest")).st_uid).pw_name
    work = private_dir(owner)
    try:
        conf = secret_file(work, "pgbackrest.conf", pgbackrest_conf(a, copy_dir, secrets["pgbackrest"], work), owner)
        base = ["pgbackrest", f"--config={conf}", f"--stanza={a['stanza']}"]
        rc, so, se = run([*base, "--output=json", "info"], user=owner, timeout=300)
        if rc != 0:
            res["db"] = {"ok": False, "error": f"pgbackrest info on the copy failed: {tail(se or so, 800)}"}
            return
        backups = (json.loads(so)[0].get("backup") or [])
        if not backups:
            res["db"] = {"ok": False, "error": "the copy holds no database backup"}
            return
        label = backups[-1]["label"]
        db = res["db"] = {"ok": False, "label": label, "run_as": owner, "path": f"{a['target']}/pg",
                          "backup_stop": backups[-1].get("timestamp", {}).get("stop"),
                          "pg_ctl": f"/usr/lib/postgresql/{a['pg_version']}/bin/pg_ctl"}
        pg = f"{a['target']}/pg"
        run(["install", "-d", "-m", "700", "-o", owner, pg])
        restore_command = f"pgbackrest --config={conf} --stanza={a['stanza']} archive-get %f \"%p\""
        t0 = time.monotonic()
        rc, so, se = run([*base, f"--set={label}", "--type=immediate", "--target-action=promote",
                          f"--recovery-option=restore_command={restore_command}", "restore"], user=owner, timeout=a["timeout_s"])
        db["restore_seconds"] = round(time.monotonic() - t0, 3)
        if rc != 0:
            db["error"] = f"pgbackrest restore failed: {tail(se or so, 1500)}"
            return
        for name, text in (("postgresql.conf", "# siaga: restored from an offline copy with the escrow\n"),
                           ("pg_hba.conf", "local all all trust\n"), ("pg_ident.conf", "")):
            path = os.path.join(pg, name)
            with open(path, "w") as fh:
                fh.write(text)
            shutil.chown(path, owner, owner)
        opts = (f"-c port={a['port']} -c listen_addresses= -c unix_socket_directories={work} -c archive_mode=off "
                "-c hot_standby=off -c shared_buffers=32MB -c max_wal_senders=0 -c max_replication_slots=0 -c wal_level=minimal")
        pg_ctl = f"/usr/lib/postgresql/{a['pg_version']}/bin/pg_ctl"
        rc, so, se = run([pg_ctl, "-D", pg, "-l", f"{work}/postgresql.log", "-w", "-t", "300", "-o", opts, "start"],
                         user=owner, timeout=330)
        if rc != 0:
            db["error"] = f"the restored cluster did not start: {tail(se or so, 800)}"
            return
        try:
            end = time.monotonic() + 300
            while True:
                rc, so, se = psql("SELECT pg_is_in_recovery()", work, a["port"], "postgres", owner)
                if rc == 0 and so.strip() == "f" or time.monotonic() > end:
                    break
                time.sleep(0.3)
            if rc != 0 or so.strip() != "f":
                db["error"] = f"the restored cluster did not finish recovery: {tail(se or so, 500)}"
                return
            rc, so, se = psql("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
                              work, a["port"], "postgres", owner)
            tables = {}
            for name in so.split() if rc == 0 else []:
                rc2, so2, se2 = psql(table_counts_sql(), work, a["port"], name, owner)
                if rc2 != 0:
                    db["error"] = f"counting {name}'s tables failed: {tail(se2, 500)}"
                    return
                tables[name] = {ln.split("|")[0]: int(ln.split("|")[1]) for ln in so2.splitlines() if "|" in ln}
            db["tables"] = tables
            db["ok"] = rc == 0
        finally:
            run([pg_ctl, "-D", pg, "-m", "fast", "-w", "stop"], user=owner, timeout=120)
            # The restore command names this run's config, which is removed: recovery is over.
            auto = os.path.join(pg, "postgresql.auto.conf")
            if os.path.exists(auto):
                with open(auto) as fh:
                    lines = [ln for ln in fh if not ln.startswith("restore_command")]
                with open(auto, "w") as fh:
                    fh.writelines(lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        res.setdefault("cleanup", []).append({"path": work, "removed": not os.path.exists(work)})


def restic_env(work, password, repo):
    return {"RESTIC_REPOSITORY": repo, "RESTIC_PASSWORD_FILE": secret_file(work, "restic.password", password + "\n"),
            "RESTIC_CACHE_DIR": f"{work}/cache"}


def open_restic(work, passwords, repo):
    """The env of the first password that opens the repository (an older copy may still need a retired one)."""
    for i, pw in enumerate(passwords):
        env = restic_env(work, pw, repo)
        rc, so, se = run(["restic", "cat", "config"], env=env, timeout=300)
        if rc == 0:
            return env, i
        os.unlink(env["RESTIC_PASSWORD_FILE"])
    raise Refused(f"no restic password of the escrow opens {repo}")


def restore_files(a, copy_dir, secrets, res):
    work = private_dir()
    try:
        repo = f"{copy_dir}/restic"
        env, which = open_restic(work, secrets["restic"]["passwords"], repo)
        files = res["files"] = {"ok": False, "password": "current" if which == 0 else f"retired #{which}", "sets": {}}
        for s in a["sets"]:
            rc, so, se = run(["restic", "snapshots", "--json", "--tag", s], env=env, timeout=300)
            snaps = json.loads(so or "[]") if rc == 0 else []
            if not snaps:
                files["sets"][s] = {"ok": False, "error": f"no snapshot of set {s} in the copy ({tail(se, 300)})"}
                continue
            snap = sorted(snaps, key=lambda x: x["time"])[-1]
            dest = f"{a['target']}/files/{s}"
            os.makedirs(dest, mode=0o700, exist_ok=True)
            t0 = time.monotonic()
            rc, so, se = run(["restic", "restore", snap["id"], "--target", dest, "--verify"], env=env, timeout=a["timeout_s"])
            count = size = 0
            for d, _, names in os.walk(dest):
                for n in names:
                    st = os.lstat(os.path.join(d, n))
                    count += 1
                    size += st.st_size
            files["sets"][s] = {"ok": rc == 0, "snapshot": snap["id"][:8], "time": snap["time"], "paths": snap.get("paths"),
                                "path": dest, "files": count, "bytes": size, "seconds": round(time.monotonic() - t0, 3),
                                "error": None if rc == 0 else tail(se, 800)}
        files["ok"] = all(v["ok"] for v in files["sets"].values()) and bool(files["sets"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        res.setdefault("cleanup", []).append({"path": work, "removed": not os.path.exists(work)})


def mode_list_copies(a, _secrets):
    root, label = medium(a["mount_point"])
    return {"ok": True, "medium": label, "copies": manifests(root)}


def mode_offline_restore(a, secrets):
    if int(a["port"]) == int(a["production_port"]):
        raise Refused(f"port {a['port']} is production's: refused")
    root, label = medium(a["mount_point"])
    copy = choose_copy(manifests(root), a.get("copy"))
    need = ["pgbackrest", f"/usr/lib/postgresql/{a['pg_version']}/bin/pg_ctl"] + (["restic"] if a["sets"] else [])
    missing = [t for t in need if not shutil.which(t)]
    if missing:
        raise Refused(f"not installed on this host: {', '.join(missing)}. Fix: apt-get install pgbackrest restic "
                      f"postgresql-{a['pg_version']} (nothing was restored)")
    preflight_target(a["target"], a["production_paths"])
    os.makedirs(a["target"], mode=0o755, exist_ok=True)
    copy_dir = os.path.join(root, copy["name"])
    res = {"medium": label, "copy": {k: copy.get(k) for k in ("name", "copied_at", "verified", "verified_at", "host")},
           "manifest_backups": (copy.get("pgbackrest") or {}).get("backups"), "target": a["target"]}
    restore_db(a, copy_dir, secrets, res)
    if a["sets"]:
        restore_files(a, copy_dir, secrets, res)
    res["ok"] = bool(res.get("db", {}).get("ok")) and (not a["sets"] or bool(res.get("files", {}).get("ok")))
    return res


def sha256_of(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mode_table_counts(a, _secrets):
    """Production's table row counts (read-only, as postgres on the local socket)."""
    sock = a.get("socket_dir", "/var/run/postgresql")
    rc, so, se = psql("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1",
                      sock, a["port"], "postgres", "postgres")
    if rc != 0:
        return {"ok": False, "error": tail(se, 500)}
    tables = {}
    for name in so.split():
        rc, out, se = psql(table_counts_sql(), sock, a["port"], name, "postgres")
        if rc != 0:
            return {"ok": False, "error": f"{name}: {tail(se, 500)}"}
        tables[name] = {ln.split("|")[0]: int(ln.split("|")[1]) for ln in out.splitlines() if "|" in ln}
    return {"ok": True, "tables": tables}


def mode_hash_files(a, _secrets):
    """sha256 of files under a root (relative names), those settled before the cutoff only."""
    out, root = {}, a["root"]
    for rel in a["paths"]:
        p = os.path.join(root, rel)
        try:
            st = os.lstat(p)
            if max(st.st_mtime, st.st_ctime) < float(a["cutoff"]):
                out[rel] = sha256_of(p)
        except OSError:
            pass
    return {"ok": True, "hashes": out}


def list_tree(a, _secrets):
    out = []
    for d, _, names in os.walk(a["root"]):
        for n in names:
            out.append(os.path.relpath(os.path.join(d, n), a["root"]))
    return {"ok": True, "paths": sorted(out)}


def mode_store_escrow(a, secrets):
    """The encrypted escrow written onto the medium (`<mount>/siaga-offline/escrow/<name>`, 0600, never replaced)."""
    root, label = medium(a["mount_point"])
    name = os.path.basename(secrets["name"])
    if not name.endswith(".gpg"):
        raise Refused(f"{name}: only an encrypted escrow (.gpg) goes on the medium")
    d = os.path.join(root, "escrow")
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = secret_file(d, name, secrets["data"])
    os.sync()
    return {"ok": True, "path": path, "medium": label}


def value_in(text, form):
    """The secret a file holds (as roles/secret_custody.extract reads it), or None."""
    if form == "text":
        return text.strip() or None
    if form.startswith("ini:"):
        found = {ln.split("=", 1)[1].strip() for ln in text.splitlines() if "=" in ln and ln.split("=", 1)[0].strip() == form[4:]}
    elif form == "pgpass":
        found = {":".join(p[4:]) for ln in text.splitlines() if not ln.startswith("#") and len(p := ln.split(":")) >= 5
                 and p[2] == "replication"}
    else:
        raise Refused(f"unknown form {form!r}")
    return found.pop() if len(found) == 1 else None


def mode_fingerprints(a, _secrets):
    """A sha256 prefix of the secret in each file (never the value): the workstation compares its copies."""
    import hashlib

    out = {}
    for item in a["items"]:
        try:
            with open(item["path"]) as fh:
                v = value_in(fh.read(), item["form"])
            out[item["path"]] = "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:12] if v else "no value"
        except FileNotFoundError:
            out[item["path"]] = "absent"
        except OSError as exc:
            out[item["path"]] = f"unreadable: {exc}"
    return {"ok": True, "fingerprints": out}


RETIRED_FILE = "/etc/siaga/backup/retired-secrets.json"


def mode_retired_get(a, _secrets):
    """The secrets a rotation retired that older copies still need, as this host keeps them."""
    try:
        with open(a.get("path", RETIRED_FILE)) as fh:
            return {"ok": True, "entries": json.load(fh)}
    except FileNotFoundError:
        return {"ok": True, "entries": []}


def mode_retired_put(a, secrets):
    path = a.get("path", RETIRED_FILE)
    if not os.path.isdir(os.path.dirname(path)):
        return {"ok": True, "changed": False, "absent": True}
    text = json.dumps(secrets["entries"], indent=2) + "\n"
    try:
        with open(path) as fh:
            if fh.read() == text:
                return {"ok": True, "changed": False}
    except FileNotFoundError:
        pass
    tmp = f"{path}.siaga-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)
    return {"ok": True, "changed": True}


# --- rotations -----------------------------------------------------------------------------------

def replace_in(text, form, old, new):
    """The file's text with the old secret replaced by the new one, or None when it does not hold the old."""
    if form == "text":
        return new + "\n" if text.strip() == old else None
    if form.startswith("ini:"):
        key, hit, lines = form[4:], False, []
        for ln in text.splitlines(keepends=True):
            if "=" in ln and ln.split("=", 1)[0].strip() == key:
                if ln.split("=", 1)[1].strip() != old:
                    return None
                ln, hit = f"{key}={new}\n", True
            lines.append(ln)
        return "".join(lines) if hit else None
    if form == "pgpass":
        hit, lines = False, []
        for ln in text.splitlines(keepends=True):
            parts = ln.rstrip("\n").split(":")
            if not ln.startswith("#") and len(parts) >= 5 and parts[2] == "replication":
                if ":".join(parts[4:]) != old:
                    return None
                ln, hit = ":".join(parts[:4] + [new]) + "\n", True
            lines.append(ln)
        return "".join(lines) if hit else None
    raise Refused(f"unknown form {form!r}")


def rewrite(path, text):
    """Replace a file's content atomically, keeping its owner and mode."""
    st = os.stat(path)
    tmp = f"{path}.siaga-rotate"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chown(tmp, st.st_uid, st.st_gid)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.rename(tmp, path)


def mode_write_secret(a, secrets):
    if not os.path.exists(a["path"]):
        return {"ok": True, "changed": False, "absent": True}
    with open(a["path"]) as fh:
        text = fh.read()
    if replace_in(text, a["form"], secrets["new"], secrets["new"]) is not None:
        return {"ok": True, "changed": False, "already": True}
    new_text = replace_in(text, a["form"], secrets["old"], secrets["new"])
    if new_text is None:
        raise Refused(f"{a['path']} holds neither the old nor the new value: not changed")
    rewrite(a["path"], new_text)
    return {"ok": True, "changed": True}


def restic_runner_env(a, work, password):
    with open(a.get("runner_config", "/etc/siaga/backup.json")) as fh:
        r = json.load(fh)["restic"]
    env = {"RESTIC_REPOSITORY": r["repository"], "RESTIC_CACHE_DIR": r["cache_dir"]}
    if password is not None:
        env["RESTIC_PASSWORD_FILE"] = secret_file(work, f"p{len(os.listdir(work))}", password + "\n")
    return ["restic", "-o", f"sftp.command={r['sftp_command']}"], env, r["password_file"]


def mode_restic_rotate(a, secrets):
    work = private_dir()
    steps = []
    try:
        base, old_env, host_file = restic_runner_env(a, work, secrets["old"])
        _, new_env, _ = restic_runner_env(a, work, secrets["new"])
        new_file = new_env["RESTIC_PASSWORD_FILE"]
        with open(host_file) as fh:
            held = fh.read().strip()
        if held == secrets["new"]:
            old_ok = run([*base, "cat", "config"], env=old_env, timeout=300)[0] == 0
            if not old_ok:
                return {"ok": True, "already": True, "steps": ["the host already holds the new password and the old one no longer opens"]}
        elif held != secrets["old"]:
            raise Refused(f"{host_file} holds neither the old nor the new password: not changed")
        rc, so, se = run([*base, "key", "list", "--json"], env=old_env, timeout=300)
        if rc != 0:
            raise Refused(f"the old password does not open the repository: {tail(se, 500)}")
        old_id = next(k["id"] for k in json.loads(so) if k.get("current"))
        steps.append(f"old key {old_id[:8]} opens the repository")
        if run([*base, "cat", "config"], env=new_env, timeout=300)[0] != 0:
            rc, so, se = run([*base, "key", "add", "--new-password-file", new_file], env=old_env, timeout=300)
            if rc != 0:
                raise Refused(f"restic key add failed: {tail(se, 500)}")
            steps.append("new key added")
        rc, so, se = run([*base, "key", "list", "--json"], env=new_env, timeout=300)
        if rc != 0:
            raise Refused(f"the new password does not open the repository after key add: {tail(se, 500)}; the old key stays")
        new_id = next(k["id"] for k in json.loads(so) if k.get("current"))
        steps.append(f"new key {new_id[:8]} opens the repository")
        if held != secrets["new"]:
            rewrite(host_file, secrets["new"] + "\n")
            steps.append(f"{host_file} holds the new password")
        if old_id != new_id:
            rc, so, se = run([*base, "key", "remove", old_id], env=new_env, timeout=300)
            if rc != 0:
                raise Refused(f"restic key remove {old_id[:8]} failed: {tail(se, 500)}")
            steps.append(f"old key {old_id[:8]} removed")
        rc, so, se = run([*base, "snapshots", "--json"], env=new_env, timeout=300)
        old_opens = run([*base, "cat", "config"], env=old_env, timeout=300)[0] == 0
        ok = rc == 0 and not old_opens
        steps.append(f"repository opened with the new password ({len(json.loads(so or '[]'))} snapshots); the old one "
                     + ("still opens it!" if old_opens else "no longer does"))
        return {"ok": ok, "steps": steps, "old_key": old_id[:8], "new_key": new_id[:8]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mode_role_password(a, secrets):
    """ALTER ROLE with a SCRAM verifier, the SQL on psql's stdin, statement logging off for it."""
    sql = (f"SET log_statement = 'none';\nSET log_min_duration_statement = -1;\n"
           f"ALTER ROLE \"{a['role']}\" PASSWORD '{secrets['verifier']}';\n")
    rc, so, se = run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(a["port"]), "-d", "postgres", "-f", "-"],
                     user="postgres", timeout=60, stdin=sql)
    return {"ok": rc == 0, "error": None if rc == 0 else tail(se, 500)}


def mode_replication_restart(a, _secrets):
    """The primary's walsenders ended, so each standby reconnects (with its .pgpass as it is now),
    then waited for: every standby streaming again on a connection made after that."""
    q = lambda sql: run(["psql", "-XAtq", "-p", str(a["port"]), "-d", "postgres", "-c", sql], user="postgres", timeout=60)
    rc, so, se = q("SELECT now()")
    since = so.strip()
    q("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    end = time.monotonic() + float(a.get("timeout_s", 90))
    rows = []
    while time.monotonic() < end:
        rc, so, se = q(f"SELECT application_name, state FROM pg_stat_replication WHERE backend_start > '{since}'")
        rows = [ln.split("|") for ln in so.splitlines()] if rc == 0 else []
        if len(rows) >= int(a["standbys"]) and all(r[1] == "streaming" for r in rows):
            return {"ok": True, "streaming": [r[0] for r in rows]}
        time.sleep(0.5)
    return {"ok": False, "streaming": [r[0] for r in rows if r[1] == "streaming"],
            "error": f"{a['standbys']} standby(s) not streaming again within {a.get('timeout_s', 90)} s"}


# --- files and pgBackRest repositories (siaga secrets rotate repo1) -------------------------------

def sha256_text(path):
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        return None


def mode_file_state(a, _secrets):
    """sha256 of each named file's content (None: absent), and the text of the named small public
    files (`read`: e.g. the repository generation)."""
    out = {"ok": True, "sha256": {p: sha256_text(p) for p in a.get("paths", [])}, "text": {}}
    for p in a.get("read", []):
        try:
            with open(p) as fh:
                out["text"][p] = fh.read(4096)
        except FileNotFoundError:
            out["text"][p] = None
    return out


def ids_of(user, group):
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


SECRET_PLACEHOLDER = "@@SIAGA-SECRET@@"


def mode_file_put(a, secrets):
    """`path` holds exactly `text` afterwards (`user`, `group`, `file_mode`), written through a new
    file renamed over it. A secret in it is SECRET_PLACEHOLDER in `text`, its value on stdin.
    Refused when its content is neither `expect` (a sha256, or "absent")
    nor the new text already. `parent`: [mode, user, group] of missing parent directories and of
    `subdirs` made in the parent."""
    path, text = a["path"], a["text"]
    if secrets.get("secret"):  # the one secret of the text comes on stdin (never a command line)
        text = text.replace(SECRET_PLACEHOLDER, secrets["secret"])
    have = sha256_text(path)
    want = hashlib.sha256(text.encode()).hexdigest()
    uid, gid = ids_of(a.get("user", "root"), a.get("group", "root"))
    mode = int(a.get("file_mode", 0o600))
    if have == want:
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        return {"ok": True, "changed": False}
    expect = a.get("expect")
    if expect is not None and have != (None if expect == "absent" else expect):
        raise Refused(f"{path} is not as expected (sha256 {(have or 'absent')[:12]}, expected {expect[:12]}): "
                      "not changed. Fix: run the site deploy first (it converges the file), then again")
    parent = os.path.dirname(path)
    if a.get("parent"):
        # Missing directories up to the path, and `subdirs` in its own (pgBackRest's conf.d), as asked.
        pmode, puser, pgroup = a["parent"]
        todo, d = [], parent
        while not os.path.isdir(d):
            todo.append(d)
            d = os.path.dirname(d)
        todo = list(reversed(todo)) + [os.path.join(parent, sub) for sub in a.get("subdirs", [])]
        for d in todo:
            os.makedirs(d, exist_ok=True)
            os.chown(d, *ids_of(puser, pgroup))
            os.chmod(d, int(pmode))
    if not os.path.isdir(parent):
        raise Refused(f"{parent} does not exist")
    tmp = f"{path}.siaga-new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.rename(tmp, path)
    return {"ok": True, "changed": True, "previous": have}


def pgbr(a, *args, config_path=None, timeout=3600):
    return run(["pgbackrest", f"--config-path={config_path or a['config_path']}", f"--stanza={a['stanza']}", *args],
               user=a["user"], timeout=timeout)


def config_value(path, key):
    """A `key=value` of a pgBackRest config file (None: not there)."""
    try:
        with open(path) as fh:
            for ln in fh:
                if "=" in ln and ln.split("=", 1)[0].strip() == key:
                    return ln.split("=", 1)[1].strip()
    except FileNotFoundError:
        return None
    return None


def repository_dir(a, path):
    """`path` if it is one of siaga's pgBackRest repositories under the repository root (not the
    root itself, nor restic's, nor the log)."""
    root = os.path.realpath(a["repository_path"])
    real = os.path.realpath(path)
    if os.path.dirname(real) != root or not re.fullmatch(r"pgbackrest(-gen[1-9]\d*)?", os.path.basename(real)):
        raise Refused(f"{path} is not a pgBackRest repository under {root}: refused")
    return real


def mode_repo1_prepare(a, _secrets):
    """A new, empty repository directory and `stanza-create` in it with the config at `config_path`
    (written before with file-put). Refuses a directory that exists and is not empty."""
    path = repository_dir(a, a["path"])
    if config_value(os.path.join(a["config_path"], "pgbackrest.conf"), "repo1-path") != path:
        raise Refused(f"{a['config_path']}/pgbackrest.conf does not name {path} as repo1-path")
    if os.path.exists(path) and os.listdir(path):
        raise Refused(f"{path} exists and is not empty (left by an earlier attempt?): nothing changed. Fix: if no "
                      f"config names it (grep -r {path} /etc/siaga /etc/pgbackrest), remove it, then rotate again")
    os.makedirs(path, exist_ok=True)
    os.chown(path, *ids_of(a["user"], a["user"]))
    os.chmod(path, 0o750)
    rc, so, se = pgbr(a, "stanza-create", timeout=600)
    if rc != 0:
        shutil.rmtree(path, ignore_errors=True)  # made here, holds nothing
        return {"ok": False, "error": f"stanza-create in {path} failed: {tail(se or so, 800)}"}
    return {"ok": True, "path": path}


def mode_repo1_backup(a, _secrets):
    """A full backup into the repository of `config_path`, run by siaga-backup (so the backup log
    records it: BK-3) with a copy of its configuration pointing there, then `pgbackrest check`
    (WAL reaches that repository). Writes `writer_record` (the pgBackRest that wrote it)."""
    work = private_dir()
    try:
        with open(a.get("runner_config", "/etc/siaga/backup.json")) as fh:
            cfg = json.load(fh)
        cfg["pgbackrest"] = {**cfg["pgbackrest"], "config_path": a["config_path"], "repo1_location": a["location"]}
        cfg_file = os.path.join(work, "backup.json")
        with open(cfg_file, "w") as fh:
            json.dump(cfg, fh)
        rc, so, se = run([a.get("runner", "/usr/local/sbin/siaga-backup"), "run", "db", "--type", "full", "--trigger", "manual",
                          "--by", a.get("by", "root"), "--why", a["why"]], env={"SIAGA_BACKUP_CONFIG": cfg_file},
                         timeout=int(a.get("timeout_s", 14400)) + 60)
        record = next((json.loads(ln[7:]) for ln in so.splitlines() if ln.startswith("RECORD ")), None)
        if rc != 0 or not record or record.get("result") != "success":
            return {"ok": False, "record": record, "error": f"full backup failed: {(record or {}).get('error') or tail(se or so, 800)}"}
        rc, so, se = pgbr(a, "check", timeout=600)
        if rc != 0:
            return {"ok": False, "record": record, "error": f"pgbackrest check failed: {tail(se or so, 800)}"}
        if a.get("writer_record"):
            rc, v, _ = run(["dpkg-query", "-W", "-f=${Version}", "pgbackrest"], timeout=60)
            if rc == 0 and v.strip():
                os.makedirs(os.path.dirname(a["writer_record"]), mode=0o700, exist_ok=True)
                with open(a["writer_record"], "w") as fh:
                    fh.write(v.strip() + "\n")
        return {"ok": True, "record": record, "label": (record.get("details") or {}).get("label")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def mode_repo1_check(a, _secrets):
    """The repository of `config_path`: its repo1-path, `info` (backups), and on request `check`
    (WAL reaches it) and `verify` (every file of it reads back as written)."""
    path = config_value(os.path.join(a["config_path"], "pgbackrest.conf"), "repo1-path")
    if path is None:
        return {"ok": False, "error": f"{a['config_path']}/pgbackrest.conf: not found or no repo1-path"}
    out = {"ok": True, "path": path, "exists": os.path.isdir(path)}
    rc, so, se = pgbr(a, "--output=json", "info", timeout=300)
    info = json.loads(so) if rc == 0 and so.strip() else []
    out["backups"] = [{"label": b["label"], "type": b["type"], "timestamp": b["timestamp"]}
                      for b in ((info[0].get("backup") or []) if info else [])]
    if rc != 0 or (info and (info[0].get("status") or {}).get("code") not in (0, 2)):
        out.update(ok=False, error=f"pgbackrest info: {tail(se or so, 500) or info[0].get('status')}")
    for step in [s for s in ("check", "verify") if a.get(s)]:
        rc, so, se = pgbr(a, "--log-level-console=info", step, timeout=int(a.get("timeout_s", 3600)))
        out[step] = {"ok": rc == 0, "output": tail(se or so, 800)}
        if rc != 0:
            out.update(ok=False, error=f"pgbackrest {step} failed: {tail(se or so, 500)}")
    return out


def mode_repo1_discard(a, _secrets):
    """Remove a pgBackRest repository directory (`path`) and/or one of the rotation's config
    directories (`config_dir`); never the repository the active config names (`active_config`)."""
    removed = []
    if a.get("path"):
        path = repository_dir(a, a["path"])
        for conf in (a["active_config"], "/etc/pgbackrest/pgbackrest.conf"):
            if config_value(conf, "repo1-path") == path or config_value(conf, "repo2-path") == path:
                raise Refused(f"{conf} names {path}: it is in use, not removed")
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(path)
    if a.get("config_dir"):
        d = os.path.realpath(a["config_dir"])
        if not re.fullmatch(r"/etc/siaga/pgbackrest-(next|next-remote|retired/gen[1-9]\d*)", d):
            raise Refused(f"{d}: not a config directory of a rotation")
        if os.path.isdir(d):
            shutil.rmtree(d)
            removed.append(d)
    return {"ok": True, "removed": removed}


MODES = {"retired-get": mode_retired_get, "retired-put": mode_retired_put, "fingerprints": mode_fingerprints, "list-copies": mode_list_copies, "offline-restore": mode_offline_restore, "table-counts": mode_table_counts, "hash-files": mode_hash_files, "list-tree": list_tree,
         "store-escrow": mode_store_escrow, "restic-rotate": mode_restic_rotate, "write-secret": mode_write_secret, "role-password": mode_role_password,
         "replication-restart": mode_replication_restart, "file-state": mode_file_state, "file-put": mode_file_put,
         "repo1-prepare": mode_repo1_prepare, "repo1-backup": mode_repo1_backup, "repo1-check": mode_repo1_check,
         "repo1-discard": mode_repo1_discard}
NEEDS_SECRETS = ("offline-restore", "store-escrow", "retired-put", "restic-rotate", "write-secret", "role-password", "file-put")


def answer(a, stdin=sys.stdin):
    try:
        if a.get("mode") not in MODES:
            return {"error": f"unknown mode {a.get('mode')!r} (modes: {', '.join(MODES)})"}
        secrets = json.loads(stdin.readline() or "null") if a["mode"] in NEEDS_SECRETS else None
        if a["mode"] in NEEDS_SECRETS and not isinstance(secrets, dict):
            return {"error": "no secrets on stdin (one JSON line expected)"}
        return MODES[a["mode"]](a, secrets)
    except Refused as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 (reported to the workstation as the answer)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: secrets-host '<json args>'  (secrets: one JSON line on stdin)", file=sys.stderr)
        return 2
    print(json.dumps(answer(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
