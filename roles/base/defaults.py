"""Typed settings of the base role, each default with its reason."""

from pydantic import BaseModel, ConfigDict, Field


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
