"""Typed settings of the clamav role: ClamAV (Debian's clamav-daemon, clamdscan, freshclam) scanning
the application's uploads. SOP IN-2."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIRROR_RE = re.compile(r"^(https?://)?[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")


class ClamavSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Where signatures come from. `freshclam`: Debian's freshclam daemon keeps them current, from
    # ClamAV's mirrors or the mirrors below. `local`: only siaga's own database (the EICAR test
    # file), freshclam masked: for the lab, which cannot reach any mirror. Never in production.
    signatures: Literal["freshclam", "local"] = "freshclam"
    # freshclam's DatabaseMirror lines (e.g. a national mirror); empty: database.clamav.net.
    database_mirrors: list[str] = Field(default_factory=list)
    # freshclam's PrivateMirror lines: the LPSE's own mirror (e.g. http://clamav.lpse.local), which
    # replaces the public ones.
    private_mirrors: list[str] = Field(default_factory=list)
    # How often freshclam looks for new signatures per day.
    freshclam_checks_per_day: int = Field(24, ge=1, le=50)
    # New uploads are scanned this long after the previous scan ended (seconds).
    scan_interval_seconds: int = Field(60, ge=10, le=3600)
    # Daily scan of every upload, HH:MM in base.timezone.
    full_scan_time: str = Field("02:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # Where found files are moved (root only) and where the records and status are kept.
    quarantine_dir: str = Field("/var/lib/siaga/quarantine", pattern=r"^/[A-Za-z0-9._/-]+$")
    state_dir: str = Field("/var/lib/siaga/clamav", pattern=r"^/[A-Za-z0-9._/-]+$")
    # clamd reloads new signatures beside the old ones (no pause in scanning, twice the memory for a
    # moment: ~2 GiB with the official databases); false halves the peak, scans wait during reloads.
    concurrent_database_reload: bool = True

    @field_validator("database_mirrors", "private_mirrors")
    @classmethod
    def _mirrors(cls, value: list[str]) -> list[str]:
        for m in value:
            if not MIRROR_RE.match(m):
                raise ValueError(f"{m!r} is not a mirror host name or http(s) URL (e.g. clamav.lpse.example.go.id or "
                                 "http://10.1.2.3:8080)")
        return value
