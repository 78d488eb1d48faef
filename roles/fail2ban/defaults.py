"""Typed settings of the fail2ban role (SOP IN-2 intrusion prevention, IN-4 intrusion attempts)."""

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork


class Fail2banSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Off: fail2ban is stopped and disabled (its package stays).
    enabled: bool = True
    # A source failing `max_retry` times within `find_time_seconds` is banned for `ban_time_seconds`.
    # 3 like debops: sshd's own per-source penalties (OpenSSH >= 9.8) start refusing after ~3
    # failures, so a higher count would rarely be reached by the sshd jail.
    max_retry: int = Field(3, ge=1, le=50)
    find_time_seconds: int = Field(600, ge=60)
    ban_time_seconds: int = Field(3600, ge=60)
    # Repeat offenders get twice the last ban each time, up to a week (bantime.increment).
    ban_time_increment: bool = True
    # Apache authentication failures (mod_auth_basic/digest: the `apache-auth` filter) in the SPSE
    # vhost's and Apache's error logs.
    apache_auth: bool = True
    # Never banned besides the site's own hosts and the admin workstations (always exempt), e.g. an
    # LKPP monitoring address. Never lock the operator out.
    extra_ignore: list[IPvAnyNetwork] = Field(default_factory=list)
