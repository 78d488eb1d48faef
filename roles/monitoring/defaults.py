"""Typed settings of the monitoring role (site key `monitoring`): Prometheus, Alertmanager and the
exporters from Debian, siaga's own figures, the alert rules' thresholds and where alerts go."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

# The ports of Debian's packages (their defaults): one place, read by the firewall and the templates.
PORTS = {"prometheus": 9090, "alertmanager": 9093, "alertmanager_cluster": 9094, "node": 9100, "postgres": 9187,
         "blackbox": 9115}
# The filesystems that are a server's disks (not pseudo or memory ones): the DiskFull alert and the
# capacity report select node_filesystem_* with it.
FS_FILTER = 'fstype!~"tmpfs|devtmpfs|ramfs|squashfs|nsfs|autofs|fuse.*|proc|sysfs|cgroup2?",mountpoint!~"/(run|sys|proc|dev)($|/.*)"'
# The database role of the postgres exporter: Debian's unit runs it as OS user prometheus (peer login).
PG_ROLE = "prometheus"
MAIL_RE = re.compile(r"^[^@\s,]+@[^@\s,]+$")
HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$|^\[[0-9a-fA-F:]+\]:[0-9]{1,5}$")


class MailSettings(BaseModel):
    """Alertmanager's e-mail (SOP IN-3: acting at once on a fault)."""

    model_config = ConfigDict(extra="forbid")

    # Who gets the alerts; empty: no e-mail (the webhook and the web UI only).
    to: list[str] = Field(default_factory=list)
    # The sender address on the alerts.
    sender: str = "siaga@localhost"
    # The mail relay, host:port (the LPSE's or the province's mail server).
    smarthost: str = "localhost:25"
    # STARTTLS required towards the smarthost (off only for a relay inside the site's own network).
    require_tls: bool = True
    # SMTP login; the password is read from this file on the workstation (0600, never in the repo)
    # and written only into Alertmanager's 0600 configuration on the hosts.
    auth_username: str = ""
    auth_password_file: Path | None = None

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for a in value:
            if not MAIL_RE.match(a):
                raise ValueError(f"'{a}' is not an e-mail address (write one address per list item, e.g. admin@lpse.example.go.id)")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not MAIL_RE.match(value):
            raise ValueError(f"'{value}' is not an e-mail address (e.g. siaga@lpse.example.go.id)")
        return value

    @field_validator("smarthost")
    @classmethod
    def _smarthost(cls, value: str) -> str:
        if not HOSTPORT_RE.match(value):
            raise ValueError(f"'{value}' is not host:port (e.g. mail.example.go.id:587)")
        return value

    @field_validator("auth_password_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value else value


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Prometheus, Alertmanager and the exporters on every server (SOP IN-3, IN-4).
    enabled: bool = True
    # How often every target is scraped and the rules evaluated (seconds).
    scrape_interval_s: int = Field(30, ge=1, le=600)
    evaluation_interval_s: int = Field(30, ge=1, le=600)
    # How long a condition holds before it alerts (Prometheus `for:`): a host or the app down, the
    # rest (disk, memory, lag, backups, certificate) use `for_s` too.
    down_for_s: int = Field(120, ge=0, le=86400)
    for_s: int = Field(300, ge=0, le=86400)
    # Alertmanager: wait this long to group alerts into one message; resend a firing alert after repeat_h.
    group_wait_s: int = Field(30, ge=0, le=3600)
    repeat_h: int = Field(4, ge=1, le=168)
    # How long Prometheus keeps its data: the capacity trend's memory (SOP IN-3).
    retention_days: int = Field(90, ge=1, le=3650)
    # How often siaga's own figures (backup age, replication) are refreshed on each host.
    figures_interval_s: int = Field(60, ge=5, le=3600)
    # The uploads tree (its bytes, for the capacity report) is walked at most this often: a large
    # tree costs a full directory walk.
    uploads_every_s: int = Field(900, ge=5, le=86400)
    # Alert thresholds.
    disk_used_percent: int = Field(85, ge=1, le=100)
    memory_used_percent: int = Field(90, ge=1, le=100)
    # A backup set with no success for longer than this (BK-1: daily incremental, weekly full).
    backup_max_age_h: int = Field(26, ge=1, le=24 * 31)
    # The offline copy (BK-9: weekly) with no verified copy for longer than this.
    offline_max_age_h: int = Field(24 * 8, ge=1, le=24 * 62)
    # The last successful restore test older than this (BK-4: at least once every three months).
    restore_test_max_age_days: int = Field(92, ge=1, le=366)
    # The public certificate expiring within this many days.
    certificate_days: int = Field(21, ge=1, le=365)
    mail: MailSettings = Field(default_factory=MailSettings)
    # Alertmanager also POSTs every alert as JSON to these URLs (a chat bridge, a ticket system).
    webhooks: list[str] = Field(default_factory=list)
    # SOP IN-3: LKPP's monitoring access, read-only: Prometheus's web UI and HTTP API (its admin and
    # lifecycle APIs are never enabled) from these networks only.
    lkpp_sources: list[IPvAnyNetwork] = Field(default_factory=list)

    @field_validator("webhooks")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for u in value:
            if not re.match(r"^https?://[^\s/]+(/\S*)?$", u):
                raise ValueError(f"'{u}' is not an http(s) URL (e.g. https://chat.example.go.id/hooks/siaga)")
        return value


def check_password_file(mail: MailSettings) -> str | None:
    """A problem with the SMTP password file (None: fine or none set): it must go with a login name
    and, where it exists, be private. A missing file is the deploy's error (a restored workstation
    loads its site file before the admin brings the file back)."""
    f = mail.auth_password_file
    if f is None:
        return None
    if not mail.auth_username:
        return "auth_password_file set without auth_username: set monitoring.mail.auth_username too"
    try:
        mode = f.stat().st_mode
    except OSError:
        return None
    if mode & 0o077:
        return f"{f} is readable by others (mode {mode & 0o777:o}): chmod 600 {f}"
    return None
