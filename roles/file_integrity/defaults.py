"""Typed settings of the file_integrity role: AIDE (Debian's aide) over the system binaries, siaga's
programs and the application tree, daily. SOP IN-2."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

AbsPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._/@+-]*[A-Za-z0-9._@+-]$")]


class FileIntegritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Directories watched (recursively) besides the application's own tree (/home/<user>/<app_name>,
    # without its logs/ and run/). Every file in them is hashed (sha256) on each check.
    paths: list[AbsPath] = Field(default_factory=lambda: ["/usr/bin", "/usr/sbin", "/usr/local/lib/siaga"])
    # Watch the application's tree too.
    watch_app: bool = True
    # Paths (and everything under them) left out.
    exclude: list[AbsPath] = Field(default_factory=list)
    # Daily check, HH:MM in base.timezone.
    check_time: str = Field("04:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # The baseline, the checks' records and the status for monitoring.
    state_dir: AbsPath = "/var/lib/siaga/integrity"
    # debsums: Debian's own daily job (`debsums -cs`, idle I/O) checks every installed package's files
    # against dpkg's checksums and logs each changed one (tag `debsums`); run by a systemd timer,
    # these hosts have no cron. false: the timer is stopped, CRON_CHECK=never.
    debsums: bool = True
    # Its daily run, HH:MM in base.timezone (after the AIDE check: both read much of /usr).
    debsums_time: str = Field("05:15", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
