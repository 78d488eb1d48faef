"""`siaga secrets rotate repo1`: a new pgBackRest repository cipher passphrase (SOP BK-8).

pgBackRest cannot re-encrypt a repository, so a new passphrase means a new repository, one
generation further (roles/backup/repo1.py: `<repository_path>/pgbackrest-genN`, the generation kept
on every host). The old one stays on disk, readable, until its backups have expired.

1. Checks: the hosts are at one generation and hold what the deploy wrote (the repository host's
   config, the database host's /etc/pgbackrest/pgbackrest.conf, both hosts' /etc/siaga/backup.json);
   the new passphrase is kept on the workstation first (`<secrets>/pgbackrest-repo1.passphrase.next`,
   0600) so no step can lose it.
2. The new repository: its config on the repository host (as repo1 for the commands run there,
   as repo2 for the database host's remote), the directory, `stanza-create`.
3. The database host archives WAL to BOTH repositories (repo2 = the new one): neither gets a gap.
4. A full backup into the new repository, run by siaga-backup (recorded in the backup log), and
   `pgbackrest check`.
   A failure in 1-4 puts everything back (the database host's config, the new directory and
   configs removed): nothing changed, the old repository keeps working.
5. The switch: the old repository's config kept as `/etc/siaga/pgbackrest-retired/genN/` on the
   repository host (it reads the old repository: restore, info, verify); the repository host's
   config, the database host's config and both runner configs as the deploy renders them for the
   new generation; the generation on every host; the init marker; then `pgbackrest check` with
   the config in use (put back to the old repository when it fails).
6. The workstation: the old passphrase in retired.json WITH its repository (host, path, generation,
   config), the new one in the secrets directory; the retired secrets synced to the hosts.

A rotation that stopped after its switch (the hosts hold the pending passphrase) is finished by the
next `siaga secrets rotate repo1`: only step 6, no host changed.

`siaga secrets rotate repo1 --remove-expired` removes a retired repository from disk (never its
passphrase from the retired secrets: offline copies made before still need it) only when
roles.backup.repo1.removal_problem finds nothing against it.
Secrets travel only on the hostside program's stdin (drc/secrets/host.py), never a command line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass

from drc.secrets import escrow as esc
from drc.secrets.host import call
from drc.secrets.rotation import ROTATIONS, RotateError
from drc.site import Site
from drc.site.data_tier import data_tier_of
from roles.backup import repo1 as gen
from roles.secret_custody import fingerprint, spec_for, workstation_value
from roles.workstation_secrets import write_private

DB_CONF = "/etc/pgbackrest/pgbackrest.conf"
SECRET_PLACEHOLDER = "@@SIAGA-SECRET@@"  # as drc/hostside/secrets_host.py's
PENDING_SUFFIX = ".next"


class RepoRotateError(RotateError):
    pass


@dataclass(frozen=True)
class Repo1Plan:
    repository_host: str
    backup_host: str
    old_generation: int
    new_generation: int
    old_path: str
    new_path: str

    @property
    def retired_config(self) -> str:
        return gen.retired_config_dir(self.old_generation)


def make_plan(repository_path: str, repository_host: str, backup_host: str, generation: int) -> Repo1Plan:
    return Repo1Plan(repository_host, backup_host, generation, generation + 1, gen.repo1_path(repository_path, generation),
                     gen.repo1_path(repository_path, generation + 1))


def plan_lines(p: Repo1Plan, stanza: str, retention_full: int) -> list[str]:
    r, s = p.repository_host, p.backup_host
    return [f"check: every host at generation {p.old_generation}, the configs on {r} and {s} as the deploy wrote them",
            f"on {r}: a new repository {p.new_path} (generation {p.new_generation}) with a new passphrase; stanza-create {stanza}",
            f"on {s}: WAL archived to both repositories while the rotation runs (repo2 = the new one)",
            f"on {r}: a full backup into {p.new_path} (recorded in the backup log), then pgbackrest check",
            "any failure so far: everything put back, the old repository keeps working",
            f"switch: {r}'s and {s}'s configs to {p.new_path}; the generation on every host; pgbackrest check",
            f"the old repository {r}:{p.old_path} stays, readable with {r}:{p.retired_config}/pgbackrest.conf",
            ("this workstation: the new passphrase in the secrets directory, the old one in retired.json with its "
             "repository (every new escrow lists both)"),
            (f"later: `siaga secrets rotate repo1 --remove-expired` removes the old repository once the new one holds "
             f"{retention_full} full backups (backup.retention_full) and verifies")]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def generations_held(site: Site) -> tuple[dict[str, str | None], list[str]]:
    """Each reachable host's generation file (text or None), and why the others could not be read."""
    seen, bad = {}, []
    for h in site.hosts:
        r = call(site, h, {"mode": "file-state", "read": [gen.GENERATION_FILE]}, None, 60)
        if not r.get("ok"):
            bad.append(f"{h}: {r.get('error')}")
            continue
        seen[h] = r["text"].get(gen.GENERATION_FILE)
    return seen, bad


def generation_in_use(site: Site) -> int:
    """The repository generation the hosts that answer hold (the escrow is written in a disaster
    too: a lost site's hosts cannot be asked)."""
    seen, bad = generations_held(site)
    if not seen:
        raise RepoRotateError("cannot read the repository generation from any host: " + "; ".join(bad))
    return gen.current_generation(seen)


def read_generation(site: Site) -> int:
    """The generation every host holds (an unreachable host or one lagging stops the rotation: the
    rotation must know which repository is in use, and leave every host knowing the new one)."""
    seen, bad = generations_held(site)
    if bad:
        raise RepoRotateError("cannot read the repository generation: " + "; ".join(bad))
    current = gen.current_generation(seen)
    lagging = [h for h, t in seen.items() if (gen.parse_generation(t) or 1) != current]
    if lagging:
        raise RepoRotateError(f"{', '.join(lagging)} not at generation {current} of the other hosts. Fix: run the site deploy "
                              "first (it writes the generation on every host), then rotate")
    return current


class Hosts:
    """The rotation's host calls: each refused or failed answer raises, with the steps done so far."""

    def __init__(self, site: Site, steps: list[str]):
        self.site, self.steps = site, steps

    def call(self, host: str, args: dict, secrets: dict | None = None, timeout: float = 600) -> dict:
        r = call(self.site, host, args, secrets, timeout)
        if not r.get("ok"):
            raise RepoRotateError(f"{host}: {r.get('error') or r}")
        return r

    def put(self, host: str, path: str, text: str, user: str, group: str, mode: int, expect: str | None = None,
            parent: list | None = None, subdirs: list[str] | None = None, secret: str | None = None) -> dict:
        r = file_put(self.site, host, path, text, user, group, mode, expect, parent, subdirs, secret)
        if not r.get("ok"):
            raise RepoRotateError(f"{host}: {r.get('error') or r}")
        return r


def file_put(site: Site, host: str, path: str, text: str, user: str, group: str, mode: int, expect: str | None = None,
             parent: list | None = None, subdirs: list[str] | None = None, secret: str | None = None) -> dict:
    """`path` on `host` holds `text`. The text goes in the arguments with `secret` (a passphrase in
    it) replaced by a placeholder; the secret alone goes on stdin (SOP BK-8: never on a command
    line; and Fabric feeds stdin a byte at a time, 10 ms each: a whole config there takes seconds)."""
    public = text
    if secret:
        if secret not in text:
            raise RepoRotateError(f"{path}: the secret is not in the text to write")
        public = text.replace(secret, SECRET_PLACEHOLDER)
    args = {"mode": "file-put", "path": path, "text": public, "user": user, "group": group, "file_mode": mode, "expect": expect}
    if parent:
        args.update(parent=parent, subdirs=subdirs or [])
    return call(site, host, args, {"secret": secret} if secret else {}, 120)


def finish_unfinished(site: Site, tier, spec, pending, old: str, generation: int, repo: str) -> dict:
    """Step 6 of a rotation that switched the hosts to `generation` (the passphrase in `pending`)
    and stopped before this workstation's part: the old passphrase retired with its repository (its
    config must be on the repository host), the pending one made the workstation's."""
    b = site.backup
    prev = generation - 1
    conf = f"{gen.retired_config_dir(prev)}/pgbackrest.conf"
    r = call(site, repo, {"mode": "file-state", "paths": [conf]}, None, 60)
    if not r.get("ok") or r["sha256"].get(conf) is None:
        raise RepoRotateError(f"the hosts use generation {generation} with the passphrase in {pending}, but {repo}:{conf} "
                              f"is missing ({r.get('error') or 'absent'}): nothing changed. Fix: compare the passphrases by "
                              f"hand (roles/backup/README.md), then move {pending} over {spec.path}")
    new = pending.read_text().strip()
    esc.add_retired(site, gen.retired_entry(old, fingerprint(old), prev, gen.repo1_path(b.repository_path, prev), repo, b.stanza,
                                            dt.datetime.now().astimezone(), generation))
    os.replace(pending, spec.path)
    steps = [(f"finished an earlier rotation: the hosts use generation {generation}; workstation: {spec.path} holds its "
              "passphrase, the old one and its repository are in retired.json")]
    steps += [f"WARNING: {w}" for w in esc.sync_retired(site)]
    return {"ok": True, "steps": steps, "old": fingerprint(old), "new": fingerprint(new), "generation": generation,
            "path": gen.repo1_path(b.repository_path, generation), "retired_path": gen.repo1_path(b.repository_path, prev)}


def plan(site: Site) -> list[str]:
    """The `--dry-run` plan (reads the generation from the hosts; changes nothing)."""
    from roles.backup.topology import backup_host, repository_host

    tier = data_tier_of(site)
    b = site.backup
    try:
        g, note = read_generation(site), []
    except (RepoRotateError, gen.GenerationError) as exc:
        g, note = 1, [f"NOTE: {exc} (the plan assumes generation 1; the rotation itself stops on this)"]
    return [*note, *plan_lines(make_plan(b.repository_path, repository_host(tier), backup_host(tier), g), b.stanza,
                                 b.retention_full)]


def rotate(site: Site) -> dict:
    try:
        return rotate_repo1(site)
    except gen.GenerationError as exc:
        raise RepoRotateError(str(exc)) from None


def rotate_repo1(site: Site) -> dict:
    from drc.secrets.rotation import new_password
    from roles.backup.deploy import (
        db_config,
        init_marker,
        repo_config,
        runner_config_text,
        writer_record,
    )
    from roles.backup.layout import CONFIG_JSON, REPO_CONFIG_PATH, RUNNER
    from roles.backup.topology import backup_host, repository_host

    tier = data_tier_of(site)
    b = site.backup
    spec = spec_for(tier, "repo1")
    old = workstation_value(spec)
    if old is None:
        raise RepoRotateError(f"{spec.path}: missing on this workstation. Fix: run the site deploy first (it fetches the hosts' copy)")
    src, repo, u = backup_host(tier), repository_host(tier), b.repository_user
    p = make_plan(b.repository_path, repo, src, read_generation(site))
    steps: list[str] = [f"generation {p.old_generation} in use ({repo}:{p.old_path})"]
    hosts = Hosts(site, steps)
    main_conf = f"{REPO_CONFIG_PATH}/pgbackrest.conf"
    next_conf, next_remote = f"{gen.NEXT_CONFIG_DIR}/pgbackrest.conf", f"{gen.NEXT_REMOTE_CONFIG_DIR}/pgbackrest.conf"
    retired_conf = f"{p.retired_config}/pgbackrest.conf"
    old_repo_conf, old_db_conf = repo_config(tier, p.old_path, old), db_config(tier, p.old_path)
    old_runner = {h: runner_config_text(tier, h, p.old_generation) for h in (src, repo)}

    # 1. The hosts hold what the deploy wrote: the rotation changes a converged site only.
    rs = hosts.call(repo, {"mode": "file-state", "paths": [main_conf, next_conf, next_remote, retired_conf, CONFIG_JSON]})["sha256"]
    ss = hosts.call(src, {"mode": "file-state", "paths": [DB_CONF, CONFIG_JSON]})["sha256"]
    differ = [where for where, have, want in ((f"{repo}:{main_conf}", rs[main_conf], sha(old_repo_conf)),
                                              (f"{src}:{DB_CONF}", ss[DB_CONF], sha(old_db_conf)),
                                              (f"{repo}:{CONFIG_JSON}", rs[CONFIG_JSON], sha(old_runner[repo])),
                                              (f"{src}:{CONFIG_JSON}", ss[CONFIG_JSON], sha(old_runner[src]))) if have != want]
    pending = spec.path.with_name(spec.name + PENDING_SUFFIX)
    if differ and pending.exists() and p.old_generation > 1 \
            and rs[main_conf] == sha(repo_config(tier, p.old_path, pending.read_text().strip())):
        # An earlier rotation switched the hosts, then stopped before this workstation's step 6: finish it.
        return finish_unfinished(site, tier, spec, pending, old, p.old_generation, repo)
    if differ:
        raise RepoRotateError(f"not as the deploy writes them: {', '.join(differ)}. Nothing changed. Fix: run the site deploy "
                              "(with this workstation's secrets), then rotate")
    if rs[retired_conf] is not None:
        raise RepoRotateError(f"{repo}:{retired_conf} exists: generation {p.old_generation} was retired before. Nothing changed")
    leftovers = [c for c in (next_conf, next_remote) if rs[c] is not None]
    common = {"repository_path": b.repository_path, "active_config": main_conf}
    if leftovers:  # an interrupted rotation that never switched (the configs above name the old repository)
        for d in (gen.NEXT_CONFIG_DIR, gen.NEXT_REMOTE_CONFIG_DIR):
            hosts.call(repo, {"mode": "repo1-discard", "config_dir": d, **common})
        hosts.call(repo, {"mode": "repo1-discard", "path": p.new_path, **common})
        steps.append(f"{repo}: the leftovers of an interrupted rotation removed ({', '.join(leftovers)}, {p.new_path})")

    new = new_password(spec.length)
    pending.unlink(missing_ok=True)  # the hosts hold the old passphrase (checked above): a leftover, never used
    write_private(pending, new + "\n")  # before any host holds it: no step can lose it
    new_repo_conf = repo_config(tier, p.new_path, new)
    trans_db = db_config(tier, p.old_path, next_path=p.new_path)
    conf_dir = [0o750, "root", u]

    made = False

    def put_back(why: str) -> RepoRotateError:
        back = []
        r = file_put(site, src, DB_CONF, old_db_conf, "root", "postgres", 0o640)
        if not r.get("ok"):
            back.append(f"{src}: {r.get('error')}")
        # The new repository only if this rotation made it (a directory found there is not its own).
        for args in ({"mode": "repo1-discard", "config_dir": gen.NEXT_REMOTE_CONFIG_DIR, **common},
                     {"mode": "repo1-discard", "config_dir": gen.NEXT_CONFIG_DIR, **common},
                     *([{"mode": "repo1-discard", "path": p.new_path, **common}] if made else [])):
            r = call(site, repo, args, None, 120)
            if not r.get("ok"):
                back.append(f"{repo}: {r.get('error')}")
        pending.unlink(missing_ok=True)
        return RepoRotateError(f"{why}. Put back: the old repository {repo}:{p.old_path} is in use, nothing changed"
                               + (f" (NOT put back: {'; '.join(back)})" if back else "") + f" (steps done: {'; '.join(steps)})")

    try:
        # 2. The new repository.
        hosts.put(repo, next_conf, new_repo_conf, "root", u, 0o640, parent=conf_dir, subdirs=["conf.d"], secret=new)
        hosts.put(repo, next_remote, gen.as_repo2(new_repo_conf), "root", u, 0o640, parent=conf_dir, subdirs=["conf.d"],
                  secret=new)
        hosts.call(repo, {"mode": "repo1-prepare", "path": p.new_path, "config_path": gen.NEXT_CONFIG_DIR, "stanza": b.stanza,
                          "user": u, **common})
        made = True
        steps.append(f"{repo}: new repository {p.new_path}, stanza {b.stanza} created with the new passphrase")
        # 3. WAL to both repositories. SOP BK-1: no gap in the old one's archive whatever happens next.
        hosts.put(src, DB_CONF, trans_db, "root", "postgres", 0o640, expect=sha(old_db_conf))
        steps.append(f"{src}: WAL archived to both repositories")
        # 4. A full backup into it, and its check.
        bk = hosts.call(repo, {"mode": "repo1-backup", "config_path": gen.NEXT_CONFIG_DIR, "stanza": b.stanza, "user": u,
                               "location": f"{repo}:{p.new_path}", "runner": RUNNER, "by": "siaga secrets rotate repo1",
                               "why": f"siaga secrets rotate repo1: first full backup of generation {p.new_generation}",
                               "writer_record": writer_record(tier, p.new_generation), "timeout_s": b.timeout_s},
                        timeout=b.timeout_s + 300)
        steps.append(f"{repo}: full backup {bk.get('label')} in the new repository; pgbackrest check passed")
    except RepoRotateError as exc:
        raise put_back(str(exc)) from None

    # 5. The switch, each step consistent (a remote never reads a passphrase for another repository):
    # the database host to the new repository through the candidate config, the repository host's
    # config in use to the new repository, the database host to that config.
    now = dt.datetime.now().astimezone()
    via_next = db_config(tier, p.new_path, repo_config_path=gen.NEXT_CONFIG_DIR)
    done: list[tuple[str, str, str, str, str, int]] = []  # what to put back if the switch fails
    try:
        hosts.put(repo, retired_conf, old_repo_conf, "root", u, 0o640, expect="absent", parent=conf_dir, subdirs=["conf.d"],
                  secret=old)
        steps.append(f"{repo}: the old repository readable with {retired_conf}")
        for host, path, text, before, user, group, mode in (
                (src, DB_CONF, via_next, trans_db, "root", "postgres", 0o640),
                (repo, main_conf, new_repo_conf, old_repo_conf, "root", u, 0o640),
                (src, DB_CONF, db_config(tier, p.new_path), via_next, "root", "postgres", 0o640),
                *((h, CONFIG_JSON, runner_config_text(tier, h, p.new_generation), old_runner[h], "root", "root", 0o640)
                  for h in (repo, src))):
            hosts.put(host, path, text, user, group, mode, expect=sha(before), secret=new if path == main_conf else None)
            done.append((host, path, before, user, group, mode))
        steps.append(f"{repo}, {src}: pgBackRest and the backup runner use {p.new_path}")
        for h in (repo, src):
            hosts.put(h, init_marker(tier, p.new_generation), now.isoformat() + "\n", "root", "root", 0o644,
                      parent=[0o700, "root", "root"])
        for h in site.hosts:
            hosts.put(h, gen.GENERATION_FILE, gen.generation_text(p.new_generation), "root", "root", 0o644,
                      parent=[0o700, "root", "root"])
        steps.append(f"generation {p.new_generation} on {', '.join(site.hosts)}")
        hosts.call(repo, {"mode": "repo1-check", "config_path": REPO_CONFIG_PATH, "stanza": b.stanza, "user": u, "check": True})
        steps.append(f"{repo}: pgbackrest check with the config in use passed")
    except RepoRotateError as exc:
        back = []
        for host, path, before, user, group, mode in reversed(done):
            r = file_put(site, host, path, before, user, group, mode, secret=old if path == main_conf else None)
            if not r.get("ok"):
                back.append(f"{host}:{path}: {r.get('error')}")
        for h in site.hosts:
            file_put(site, h, gen.GENERATION_FILE, gen.generation_text(p.old_generation), "root", "root", 0o644,
                     parent=[0o700, "root", "root"])
        call(site, repo, {"mode": "repo1-discard", "config_dir": p.retired_config, **common}, None, 120)
        err = put_back(f"the switch to {p.new_path} failed: {exc}" + (f" (not put back: {'; '.join(back)})" if back else ""))
        raise RepoRotateError(f"{err}. WAL archived during the switch may be only in the discarded new repository: take "
                              "a full backup now (siaga backup run --set db)") from None
    for d in (gen.NEXT_CONFIG_DIR, gen.NEXT_REMOTE_CONFIG_DIR):
        r = call(site, repo, {"mode": "repo1-discard", "config_dir": d, **common}, None, 120)
        if not r.get("ok"):
            steps.append(f"WARNING: {repo}: {d} not removed: {r.get('error')}")

    # 6. The workstation.
    esc.add_retired(site, gen.retired_entry(old, fingerprint(old), p.old_generation, p.old_path, repo, b.stanza, now,
                                            p.new_generation))
    os.replace(pending, spec.path)
    steps.append(f"workstation: {spec.path} holds the new passphrase; the old one and its repository are in retired.json")
    for w in esc.sync_retired(site):
        steps.append(f"WARNING: {w}")
    return {"ok": True, "steps": steps, "old": fingerprint(old), "new": fingerprint(new),
            "generation": p.new_generation, "path": p.new_path, "retired_path": p.old_path}


def remove_expired(site: Site, dry_run: bool) -> dict:
    """Retired repositories removed from disk when their backups have expired and the repository
    in use verifies (roles.backup.repo1.removal_problem). The passphrases stay in the retired secrets."""
    from roles.backup.layout import REPO_CONFIG_PATH
    from roles.backup.topology import repository_host

    tier = data_tier_of(site)
    b = site.backup
    entries = esc.read_retired(site)
    todo = [e for e in entries if e.get("key") == "repo1" and e.get("repository_path") and not e.get("repository_removed_at")]
    steps: list[str] = []
    if not todo:
        return {"ok": True, "steps": ["no retired repository on disk"], "removed": []}
    current = read_generation(site)
    repo = repository_host(tier)
    cur = call(site, repo, {"mode": "repo1-check", "config_path": REPO_CONFIG_PATH, "stanza": b.stanza,
                            "user": b.repository_user, "verify": True, "timeout_s": b.timeout_s}, None, b.timeout_s + 300)
    if cur.get("error") and "backups" not in cur:
        raise RepoRotateError(f"{repo}: the repository in use not read: {cur.get('error')}")
    verified = bool((cur.get("verify") or {}).get("ok"))
    steps.append(f"{repo}:{cur.get('path')} (generation {current}): {sum(1 for x in cur.get('backups', []) if x['type'] == 'full')} "
                 f"full backup(s), verify {'passed' if verified else 'FAILED'}")
    removed, now = [], dt.datetime.now().astimezone().isoformat(timespec="seconds")
    for e in todo:
        why = gen.removal_problem(e, cur.get("backups", []), b.retention_full, verified, current)
        where = f"{e['repository_host']}:{e['repository_path']} (generation {e['generation']})"
        if why:
            steps.append(f"kept {where}: {why}")
            continue
        if dry_run:
            steps.append(f"would remove {where} and {e.get('config_path')}")
            continue
        r = call(site, e["repository_host"], {"mode": "repo1-discard", "path": e["repository_path"], "config_dir": e.get("config_path"),
                                              "repository_path": b.repository_path,
                                              "active_config": f"{REPO_CONFIG_PATH}/pgbackrest.conf"}, None, 600)
        if not r.get("ok"):
            steps.append(f"NOT removed {where}: {r.get('error')}")
            continue
        e["repository_removed_at"] = now
        removed.append(where)
        steps.append(f"removed {where}; its passphrase stays in the retired secrets (offline copies made before need it)")
    if removed:
        esc.write_retired(site, entries)
        for w in esc.sync_retired(site):
            steps.append(f"WARNING: {w}")
    return {"ok": True, "steps": steps, "removed": removed}


def cmd_remove_expired(site: Site, args, console) -> int:
    """`siaga secrets rotate repo1 --remove-expired [--dry-run] [--yes]`, recorded as rotations are."""
    import getpass
    import json
    import socket
    import uuid

    from drc.records import store as records
    from drc.secrets.rotation import confirm

    if args.name != "repo1":
        console.print("[red]error:[/red] --remove-expired goes with repo1 only", highlight=False)
        return 2
    started = dt.datetime.now().astimezone()
    try:
        if not args.dry_run:
            confirm(args, "repo1")
        res = remove_expired(site, args.dry_run)
    except (RotateError, gen.GenerationError) as exc:
        res = {"ok": False, "error": str(exc), "steps": []}
    if not args.dry_run:
        rec = {"id": f"rotate-{uuid.uuid4().hex[:12]}", "name": "repo1", "action": "remove-expired",
               "start": started.isoformat(timespec="seconds"), "end": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "by": f"{getpass.getuser()}@{socket.gethostname()}", "result": "success" if res.get("ok") else "failure",
               "steps": res.get("steps", []), "error": res.get("error"), "removed": res.get("removed", [])}
        records.append_new(records.records_dir(site) / ROTATIONS, [rec])
    if args.json:
        console.file.write(json.dumps({**res, "dry_run": bool(args.dry_run)}, indent=2) + "\n")
    else:
        for s in res.get("steps", []):
            console.print(f"  - {s}", highlight=False, markup=False)
        if not res.get("ok"):
            console.print(f"[red]failed:[/red] {res.get('error')}", highlight=False)
    return 0 if res.get("ok") else 1
