"""Where the pgBackRest repository (repo1) lives, and the repositories a cipher rotation retired.

pgBackRest cannot re-encrypt a repository: `siaga secrets rotate repo1` (drc/secrets/rotate_repo.py)
makes a NEW repository beside the old one, one generation further. The generation is kept on the
hosts (GENERATION_FILE on every host, "2\\n"; absent: generation 1), not in the site file: a site file
written before the rotation (another admin's copy, a regenerated lab file) must never point the
hosts back at the old repository with the new passphrase. The deploy reads it from every host it
deploys and takes the highest (roles/backup/deploy.py), so it converges on what the hosts hold.

- generation 1: `<repository_path>/pgbackrest` (every site before its first rotation);
- generation N > 1: `<repository_path>/pgbackrest-genN`.

A retired repository stays on the repository host, readable with its own config
(`RETIRED_CONFIG_DIR/genN/pgbackrest.conf`, 0640 root:<repository account>, its old passphrase),
written by the rotation and left alone by the deploy; its passphrase and path are also kept in the
retired secrets (retired.json on the workstation, /etc/siaga/backup/retired-secrets.json on the hosts).
It is removed only when `removal_problem` finds nothing against it (SOP BK-8, BK-9).
Pure functions only (unit-tested in tests/test_rotate_repo_units.py).
"""

from __future__ import annotations

import datetime as dt
import re

GENERATION_FILE = "/var/lib/siaga/backup/pgbackrest-repo1-generation"
# While a rotation runs, on the repository host (both removed after): the new repository's config
# as repo1, for the commands run there (stanza-create, the full backup, check) ...
NEXT_CONFIG_DIR = "/etc/siaga/pgbackrest-next"
# ... and as repo2, for the remote the database host's archive-push starts for its repo2 (pgBackRest
# hands a remote the repository's index: it reads repo2-* options, and refuses a repo1-path
# equal to repo2-path).
NEXT_REMOTE_CONFIG_DIR = "/etc/siaga/pgbackrest-next-remote"
RETIRED_CONFIG_DIR = "/etc/siaga/pgbackrest-retired"
NAME = re.compile(r"^pgbackrest(?:-gen([2-9]|[1-9]\d{1,5}))?$")


class GenerationError(ValueError):
    pass


def repo1_path(repository_path: str, generation: int) -> str:
    """The repository directory of a generation on the repository host."""
    if generation < 1:
        raise GenerationError(f"generation {generation}: must be 1 or more")
    return f"{repository_path}/pgbackrest" if generation == 1 else f"{repository_path}/pgbackrest-gen{generation}"


def generation_of_path(repository_path: str, path: str) -> int | None:
    """The generation a repository path belongs to (None: not one of siaga's repositories there)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    m = NAME.match(name)
    if parent != repository_path.rstrip("/") or not m:
        return None
    return int(m.group(1)) if m.group(1) else 1


def parse_generation(text: str | None) -> int | None:
    """The generation file's content: None when absent or empty; GenerationError when garbled
    (the deploy stops rather than guess which repository holds the backups)."""
    if text is None or not text.strip():
        return None
    if not re.fullmatch(r"[1-9]\d{0,5}", text.strip()):
        raise GenerationError(f"not a generation number: {text.strip()[:40]!r}")
    return int(text.strip())


def current_generation(seen: dict[str, str | None]) -> int:
    """The generation the site is at, from each host's GENERATION_FILE text (None: absent): the
    highest any host holds (a rebuilt host or one the rotation could not reach lags), 1 when none."""
    found = []
    for host, text in seen.items():
        try:
            g = parse_generation(text)
        except GenerationError as exc:
            raise GenerationError(f"{host}:{GENERATION_FILE}: {exc}. Fix: write the generation of the repository in "
                                  "use (the number after pgbackrest-gen in the repository host's "
                                  "/etc/siaga/pgbackrest-repo/pgbackrest.conf repo1-path; 1 for .../pgbackrest)") from None
        if g is not None:
            found.append(g)
    return max(found, default=1)


def generation_text(generation: int) -> str:
    return f"{generation}\n"


def retired_config_dir(generation: int) -> str:
    return f"{RETIRED_CONFIG_DIR}/gen{generation}"


def transitional_lines(repo_address: str, user: str, path: str) -> list[str]:
    """repo2 on the database host while a rotation runs: WAL goes to BOTH repositories (archive-push
    writes every configured repository), so neither has a gap whichever way the rotation ends."""
    return [f"repo2-host={repo_address}", f"repo2-host-user={user}", f"repo2-host-config-path={NEXT_REMOTE_CONFIG_DIR}",
            f"repo2-path={path}"]


def as_repo2(config: str) -> str:
    """The repository host's config with its repository's options as repo2-* (NEXT_REMOTE_CONFIG_DIR)."""
    return "".join("repo2-" + ln[len("repo1-"):] if ln.startswith("repo1-") else ln for ln in config.splitlines(keepends=True))


def retired_entry(old: str, fingerprint: str, generation: int, path: str, host: str, stanza: str, now: dt.datetime,
                  new_generation: int) -> dict:
    """The retired secrets' entry of a repository a rotation replaced: its passphrase AND where it
    is and how to read it (escrows list it; `siaga secrets rotate repo1 --remove-expired` removes it
    from disk, never from the list: offline copies made before still need the passphrase)."""
    return {"key": "repo1", "value": old, "fingerprint": fingerprint,
            "retired_at": now.isoformat(timespec="seconds"),
            "needed_by": f"the retired repository {host}:{path} and offline copies and escrows made before this time",
            "generation": generation, "repository_host": host, "repository_path": path, "stanza": stanza,
            "config_path": retired_config_dir(generation), "replaced_by_generation": new_generation}


def removal_problem(entry: dict, current_fulls: list[dict], retention_full: int, current_verified: bool,
                    current_generation_: int) -> str:
    """'' when a retired repository may go from disk, else why not (SOP BK-8, BK-9: never the last
    verified copy). Its backups have expired when the current repository holds `retention_full`
    full backups (all made after the retired one took its last): pgBackRest's own retention
    (repo1-retention-full) would have expired every older backup by then. And the current repository must verify
    (`pgbackrest verify`): otherwise the retired one may be the last good copy."""
    if entry.get("repository_removed_at"):
        return f"already removed ({entry['repository_removed_at']})"
    if not entry.get("repository_path") or not entry.get("generation"):
        return "the entry names no repository (a passphrase retired before repositories were rotated)"
    if int(entry["generation"]) >= current_generation_:
        return f"generation {entry['generation']} is the repository in use (current: {current_generation_})"
    # Every backup of the current repository was made after the retired one stopped taking any.
    fulls = [b for b in current_fulls if b.get("type") == "full"]
    if len(fulls) < retention_full:
        return (f"its backups have not expired: the current repository holds {len(fulls)} full backup(s), "
                f"backup.retention_full is {retention_full}")
    if not current_verified:
        return "the current repository did not verify: the retired one may be the last good copy"
    return ""
