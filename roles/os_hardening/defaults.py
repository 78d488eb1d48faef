"""Typed settings of the os_hardening role (controls after devsec.hardening os_hardening)."""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")


class SettingError(ValueError):
    """A wrong setting: the problem and its fix (drc.site.model prints both)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix, self.key = problem, fix, None


def _key(key: str) -> str:
    if not SYSCTL_KEY.match(key):
        raise SettingError(f"{key!r} is not a sysctl key", "write it dotted as `sysctl -a` prints it, e.g. net.ipv4.ip_forward")
    return key


class OsHardeningSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Kernel settings besides or instead of siaga's set (roles/os_hardening/sysctl.py), e.g.
    # {"net.ipv4.ip_forward": "1"} on a host that must route.
    sysctl_extra: dict[str, str] = Field(default_factory=dict)
    # Keys of siaga's set left at the kernel's value.
    sysctl_skip: list[str] = Field(default_factory=list)
    # auditd with siaga's rules for privileged commands and changes to identity, sudo, sshd and
    # siaga's own files (SOP IN-4: password files, intrusion attempts).
    auditd: bool = True
    # No core dumps from login sessions (limits.d) nor stored by systemd-coredump: a core of a
    # process that read /etc/shadow, a TLS key or the database holds them in clear (SOP IN-2).
    core_dumps: bool = False
    # An interactive shell idle at its prompt this long logs out (bash TMOUT, read-only); 0: never.
    shell_idle_logout_seconds: int = Field(900, ge=0, le=86400)
    # Rounds of SHA-512 password hashing for the tools that read login.defs (chpasswd, newusers):
    # guessing a stolen hash costs this many times more (devsec os_sha_crypt_*_rounds; Debian 5000).
    password_hash_rounds: int = Field(65536, ge=5000, le=999_999_999)
    # Shortest password pam_pwquality accepts when one is set with passwd (admins log in by key and
    # sudo without one, base.sudo_nopasswd; this is for any password set anyway).
    password_min_length: int = Field(14, ge=8, le=128)
    # libpam-tmpdir: every PAM session (SSH logins, sudo, su, runuser) gets its own $TMPDIR,
    # /tmp/user/<uid> (0700), so a temporary file of root or of a service account is neither
    # guessable nor readable in the shared /tmp. siaga's deploys stage uploads in /tmp explicitly
    # (roles/upload_staging.py). false: the package is removed.
    private_tmpdir: bool = True
    # /dev/shm (POSIX shared memory: PostgreSQL's dynamic shared memory) mounted nosuid,nodev,noexec,
    # now and at boot (/etc/fstab): no program is run or setuid-ed from a world-writable tmpfs.
    # false: the fstab line is removed (the next boot mounts it as systemd does: nosuid,nodev).
    dev_shm_noexec: bool = True
    # needrestart in list-only mode: after each apt run it lists the services still running replaced
    # libraries; it never restarts one itself (PostgreSQL, the application: a restart is the admin's
    # decision). false: the package is removed.
    needrestart: bool = True

    @field_validator("sysctl_skip")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            _key(key)
        return value

    @field_validator("sysctl_extra")
    @classmethod
    def _pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, v in value.items():
            _key(key)
            if not re.fullmatch(r"[A-Za-z0-9 ._:/-]+", str(v)):
                raise SettingError(f"sysctl value {v!r} of {key} has characters no kernel setting has",
                                   "give a number or a word, quoted, e.g. \"1\"")
        return value
