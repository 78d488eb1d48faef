"""Typed settings of the backup role (pgBackRest for the database, restic for files, one runner
that writes the backup log). Site file key: `backup:`. SOP BK-1..BK-9."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SET_NAME = r"^[a-z][a-z0-9-]{0,30}$"
RESERVED_SETS = ("db", "offline", "prechange", "all")


class BackupSet(BaseModel):
    """One named set of paths backed up with restic (SOP BK-8: what is backed up)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=SET_NAME)
    # Absolute paths on the host that holds the live data (the database source host).
    paths: list[str] = Field(min_length=1)
    # restic --exclude patterns (e.g. temporary files of the application).
    exclude: list[str] = Field(default_factory=list)
    # systemd OnCalendar of this set's incremental run (restic only stores what changed: BK-1).
    on_calendar: str = "*-*-* 01:30"
    # Also taken by the site deploy before it changes the database, app or configuration (BK-2).
    before_change: bool = False

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not p.startswith("/") or "\n" in p:
                raise ValueError(f"path {p!r} must be absolute")
        return paths


def _default_sets() -> list[BackupSet]:
    return [
        # The uploaded tender documents (SPSE's /home/file): the production data besides the database.
        BackupSet(name="uploads", paths=["/home/file"], exclude=[".tmp-*"], on_calendar="*-*-* 01:30"),
        # System files (BK-9): configuration, the application and its settings, admin scripts.
        BackupSet(name="system", paths=["/etc", "/home/appserv", "/usr/local/sbin"], on_calendar="*-*-* 01:45",
                  before_change=True),
    ]


MEDIUM_LABEL = r"[A-Z0-9][A-Z0-9-]{0,30}"  # as siaga-offline-copy's LABEL


class OfflineSettings(BaseModel):
    """The copies on removable media, used in rotation (BK-1, BK-9: a copy the server cannot reach,
    kept in a safe place away from the server room)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Where the media is mounted while copying. The runner refuses to write unless this is a
    # mount point (never into the server's own disk by mistake). Which medium it is comes from its
    # label file (siaga-offline/medium.json), never from the mount point.
    mount_point: str = "/media/siaga-offline"
    # Block device of the media (e.g. /dev/disk/by-label/SIAGA-OFFLINE): the runner mounts it for
    # the copy and unmounts it after. Unset: someone else attaches it (the lab, an operator).
    device: str | None = None
    # Weekly copy (BK-9 "at least every 7x24 hours"); unset: only on `siaga backup run --set offline`.
    on_calendar: str | None = "Sun *-*-* 04:00"
    # The media labels in rotation order (BK-1), each initialised once with
    # `siaga backup offline --init-medium LABEL`. A copy onto another labelled medium is refused.
    media: list[str] = Field(default_factory=lambda: ["OFFLINE-A", "OFFLINE-B", "OFFLINE-C"], min_length=1)
    # Days each medium's turn lasts: the medium whose last verified copy is the oldest is due this
    # long after the newest verified copy (weekly: A -> B -> C -> A).
    rotation_days: int = Field(7, ge=1, le=366)
    # Verified copies kept on each medium (each one restorable on its own); failed copies never
    # count, and a medium's last verified copy is never deleted.
    retention_full: int = Field(4, ge=1, le=100)

    @field_validator("media")
    @classmethod
    def _labels(cls, media: list[str]) -> list[str]:
        import re

        for label in media:
            if not re.fullmatch(MEDIUM_LABEL, label):
                raise ValueError(f"medium label {label!r}: capital letters, digits and '-' (e.g. OFFLINE-A)")
            if media.count(label) > 1:
                raise ValueError(f"medium label {label} is listed twice")
        return media


class PgbackrestApt(BaseModel):
    """An apt repository pgBackRest is installed from (the PostgreSQL project's, or an LPSE's mirror
    of it): only the package pgbackrest is taken from it (apt pinning), everything else stays Debian's."""

    model_config = ConfigDict(extra="forbid")

    # The repository's URL, e.g. http://mirror.lpse.example/apt.postgresql.org/pub/repos/apt
    url: str = Field(pattern=r"^https?://[^\s'\"]+$")
    # Its suite for the platform's release, e.g. bookworm-pgdg (apt.postgresql.org's naming).
    suite: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    component: str = Field("main", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # The repository's signing key on the admin workstation (ASCII-armoured or binary OpenPGP, as
    # the repository publishes it, e.g. ACCC4CF8.asc); copied to /etc/apt/keyrings and named by
    # signed-by, so it signs this repository only.
    key_file: str = Field(min_length=1)


class BackupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Off: no backup role on the hosts (not for production: SOP BK-1).
    enabled: bool = True
    # The site whose first host holds the repository: the site that does not serve (away from
    # the data: BK-9). Follows `active_site`: leave it unset. The database source site's host
    # backs up to it over SSH.
    repository_site: Literal["primary", "drc"] | None = None
    # Restricted account on the repository host that owns the repositories; reachable only with
    # the backup keys, only from the backing-up host, only for pgBackRest's remote and SFTP.
    repository_user: str = Field("siagabak", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Repository root on the repository host (a dedicated filesystem in production).
    repository_path: str = "/srv/siaga-backup"
    # pgBackRest stanza name (one PostgreSQL cluster).
    stanza: str = Field("spse", pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    # Full database backup weekly, incremental daily (BK-1, BK-9); systemd OnCalendar expressions.
    full_on_calendar: str = "Sun *-*-* 01:00"
    incr_on_calendar: str = "Mon..Sat *-*-* 01:00"
    # Full backups kept in the DRC repository (older ones expire with their WAL).
    retention_full: int = Field(4, ge=1, le=100)
    # A WAL segment is archived at least this often: the most a point-in-time restore can lose.
    archive_timeout_s: int = Field(60, ge=10, le=3600)
    # WAL waiting to be archived (DRC unreachable) above this size is dropped so the primary's disk
    # never fills (IN-3); point-in-time recovery then has a gap until the next full backup.
    archive_push_queue_max: str = Field("8GiB", pattern=r"^\d+(B|KiB|MiB|GiB|TiB)?$")
    # pgBackRest comes from the platform's Debian (Debian 13: 2.55, block incremental; Debian 12:
    # 2.45, file-level incrementals). Set, the newer pgBackRest of this apt repository instead
    # (e.g. a mirror of the PostgreSQL project's apt.postgresql.org), pinned to that one package.
    pgbackrest_apt: PgbackrestApt | None = None
    # pgBackRest compression (zst: fast, supported by 2.45 and 2.55 alike).
    compress_type: Literal["zst", "lz4", "gz", "bz2", "none"] = "zst"
    process_max: int = Field(2, ge=1, le=32)
    # restic sets (BK-8); `db` is the pgBackRest set. Names are unique.
    sets: list[BackupSet] = Field(default_factory=_default_sets)
    # restic snapshots kept (forget --prune runs weekly with the full database backup).
    keep_daily: int = Field(14, ge=1)
    keep_weekly: int = Field(8, ge=1)
    keep_monthly: int = Field(12, ge=0)
    prune_on_calendar: str = "Sun *-*-* 03:00"
    offline: OfflineSettings = Field(default_factory=OfflineSettings)
    # A run taking longer is stopped and logged as a failure (BK-1 aims at 3 hours).
    timeout_s: int = Field(4 * 3600, ge=60)
    # Grace added to a set's schedule period before a missing success counts as a failure (BK-3, BK-5).
    missing_grace_s: int = Field(6 * 3600, ge=0)
    # The backup log on each host (JSON lines, one per run, fsynced).
    log_file: str = "/var/log/siaga/backup.jsonl"
    # Where the passphrases and keys live on the admin workstation (0600). Unset:
    # ~/.local/state/siaga/<site>/ (outside the repository).
    secrets_dir: str | None = None

    @model_validator(mode="after")
    def _unique_sets(self) -> BackupSettings:
        names = [s.name for s in self.sets]
        for name in names:
            if name in RESERVED_SETS:
                raise ValueError(f"backup set name '{name}' is reserved ({', '.join(RESERVED_SETS)})")
            if names.count(name) > 1:
                raise ValueError(f"backup set '{name}' is listed twice")
        return self
