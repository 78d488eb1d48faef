"""Typed settings of the base role, each default with its reason."""

import zoneinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # LPSEs span WIB/WITA/WIT; records and logs must carry local time.
    timezone: str = "Asia/Jakarta"
    # Time sync keeps logs, backups and RPO figures comparable between sites.
    ntp_servers: list[str] = Field(default_factory=lambda: ["0.id.pool.ntp.org", "1.id.pool.ntp.org"])
    # SOP RA-3: people log in as themselves, members of this group, and escalate with sudo.
    admin_group: str = "lpse-admin"
    # Key-only logins leave admins without a password; sudo is still logged per user.
    sudo_nopasswd: bool = True
    # Accounts of people who left: locked and removed from the admin group (never deleted: audit trail).
    removed_admins: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        known = zoneinfo.available_timezones()
        if known and value not in known:
            raise ValueError(f"unknown timezone {value!r}: use an IANA name such as Asia/Jakarta (WIB), Asia/Makassar (WITA) or Asia/Jayapura (WIT)")
        return value
