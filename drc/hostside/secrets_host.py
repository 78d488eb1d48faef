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
"""

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


MODES = {"retired-get": mode_retired_get, "retired-put": mode_retired_put, "fingerprints": mode_fingerprints, "list-copies": mode_list_copies, "offline-restore": mode_offline_restore, "table-counts": mode_table_counts, "hash-files": mode_hash_files, "list-tree": list_tree,
         "store-escrow": mode_store_escrow, "restic-rotate": mode_restic_rotate, "write-secret": mode_write_secret, "role-password": mode_role_password,
         "replication-restart": mode_replication_restart}
NEEDS_SECRETS = ("offline-restore", "store-escrow", "retired-put", "restic-rotate", "write-secret", "role-password")


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
