"""Typed settings of the base role, each default with its reason."""

import re
import zoneinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

# --- security updates (unattended-upgrades) and the reboot window ------------------------------

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WINDOW_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01][0-9]|2[0-3]):([0-5][0-9])$")
# A host that starts rebooting at the last minute of its window is back this much later; the two
# sites' windows must stay apart by it too ("never on both sites at once").
REBOOT_SETTLE_MINUTES = 15
WEEK_MINUTES = 7 * 24 * 60
DAY_MINUTES = 24 * 60
TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
# The unattended runs of the two sites start at least this far apart: a security update restarts
# what it replaces (PostgreSQL, Apache), and a bad one shows on one site first.
UPGRADE_GAP_MINUTES = 60
# Keys apt's Origins-Pattern understands (unattended-upgrade(8)); long and short forms.
ORIGIN_KEYS = {"origin", "o", "label", "l", "archive", "a", "suite", "codename", "n", "component", "c", "site"}
# Debian's security archive only (the codename form is how Debian 11+ name it; the second is the
# pre-bullseye layout, harmless elsewhere). Debian's own default also takes point releases.
SECURITY_ORIGINS = [
    "origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
    "origin=Debian,codename=${distro_codename},label=Debian-Security",
]


def window_minutes_of_week(window: str) -> int:
    """'Sun 02:00' -> minutes since Monday 00:00."""
    m = WINDOW_RE.match(window)
    if not m:
        raise ValueError(f"reboot window {window!r} is not 'Day HH:MM'")
    return DAYS.index(m.group(1)) * 24 * 60 + int(m.group(2)) * 60 + int(m.group(3))


def minutes_apart_in_a_day(a: str, b: str) -> int:
    """'05:00', '06:30' -> 90: minutes between two daily times, the shorter way round midnight."""
    ma, mb = (int(t[:2]) * 60 + int(t[3:]) for t in (a, b))
    d = (mb - ma) % DAY_MINUTES
    return min(d, DAY_MINUTES - d)


def windows_overlap(a: str, b: str, minutes: int, settle: int = REBOOT_SETTLE_MINUTES) -> bool:
    """Whether two weekly windows of `minutes` (each followed by `settle` minutes of booting) share
    any minute, counting across the week's end (Sun 23:30 touches Mon 00:10)."""
    busy = minutes + settle
    d = (window_minutes_of_week(b) - window_minutes_of_week(a)) % WEEK_MINUTES
    return d < busy or WEEK_MINUTES - d < busy


class RebootSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A security update of the kernel or libc needs a reboot (/var/run/reboot-required); siaga's
    # timer reboots such a host in its site's window only. false: admins reboot by hand.
    enabled: bool = True
    # Per site (primary, drc): when the weekly window starts, 'Day HH:MM' in base.timezone. The two
    # sites' windows may not overlap; the form and the overlap are checked in drc/site/model.py.
    windows: dict[str, str] = Field(default_factory=lambda: {"primary": "Sun 02:00", "drc": "Sun 04:00"})
    # How long after the start a reboot may still begin: it waits for backups and apt/dpkg to finish.
    window_minutes: int = Field(60, ge=10, le=360)


class SecurityUpdatesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # SOP IN-2/IN-4: Debian's unattended-upgrades installs security updates daily
    # (apt-daily-upgrade.timer). false: the lists are still refreshed, nothing is installed.
    enabled: bool = True
    # apt Origins-Pattern entries unattended-upgrades may install from; Debian-Security only, so a
    # point release or backport never arrives unattended. Replaces Debian's list (not added to it).
    origins: list[str] = Field(default_factory=lambda: list(SECURITY_ORIGINS), min_length=1)
    # Per site (primary, drc): the daily time ('HH:MM', base.timezone) apt-daily-upgrade.timer runs
    # unattended-upgrades, instead of Debian's 06:00 + up to 60 min on both sites alike. At least 60
    # min apart (drc/site/model.py); after the nightly backups, before office hours, the DRC first.
    upgrade_times: dict[str, str] = Field(default_factory=lambda: {"primary": "06:30", "drc": "05:00"})
    reboot: RebootSettings = Field(default_factory=RebootSettings)

    @field_validator("origins")
    @classmethod
    def _origin_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if any(ch in re.sub(r"\$\{[a-z_]+\}", "", pattern) for ch in '";{}\n\\'):
                raise ValueError(f"origin {pattern!r} contains a quote, ';', a brace (other than ${{distro_codename}}) or a line break")
            for part in pattern.split(","):
                key, eq, val = part.partition("=")
                if not eq or key.strip() not in ORIGIN_KEYS or not val.strip():
                    raise ValueError(f"origin {pattern!r}: {part!r} is not key=value with key one of "
                                     f"{', '.join(sorted(ORIGIN_KEYS))} (e.g. '{SECURITY_ORIGINS[0]}')")
        return value


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
    # Security updates by unattended-upgrades, reboots in each site's window (roles/base/updates.py).
    security_updates: SecurityUpdatesSettings = Field(default_factory=SecurityUpdatesSettings)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        known = zoneinfo.available_timezones()
        if known and value not in known:
            raise ValueError(f"unknown timezone {value!r}: use an IANA name such as Asia/Jakarta (WIB), Asia/Makassar (WITA) or Asia/Jayapura (WIT)")
        return value
