"""The site file: one validated description of an LPSE site (hosts, admins, allowlist, settings).

Everything else (pyinfra inventories, roles, runbooks) reads the `Site` model built here, so a bad
file is refused once, before any host is contacted, with the file, the key and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    IPvAnyAddress,
    IPvAnyNetwork,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS, Platform
from drc.site.traffic import TrafficSettings, check_against_sites
from roles.backup.defaults import BackupSettings
from roles.base.defaults import (
    DAYS,
    REBOOT_SETTLE_MINUTES,
    TIME_RE,
    UPGRADE_GAP_MINUTES,
    WINDOW_RE,
    BaseSettings,
    minutes_apart_in_a_day,
    windows_overlap,
)
from roles.clamav.defaults import ClamavSettings
from roles.fail2ban.defaults import Fail2banSettings
from roles.fencing.defaults import FencingSettings
from roles.file_integrity.defaults import FileIntegritySettings
from roles.firewall.defaults import FirewallSettings
from roles.logbook.defaults import LogbookSettings
from roles.modsecurity.defaults import ModsecuritySettings
from roles.monitoring.defaults import MonitoringSettings, check_password_file
from roles.os_hardening.defaults import OsHardeningSettings
from roles.postgresql.defaults import PostgresqlSettings
from roles.replication.defaults import ReplicationSettings
from roles.spse_app.defaults import SpseAppSettings
from roles.ssh_hardening.defaults import SshHardeningSettings
from roles.uploads_sync.defaults import UploadsSyncSettings

SITE_ROLES = ("primary", "drc")
NAME_RE = r"^[a-z][a-z0-9-]{0,30}$"
USER_RE = r"^[a-z_][a-z0-9_-]{0,31}$"
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]{16,}( .*)?$")


class SiteError(Exception):
    """A site file that cannot be used; the message names the file, the key and the fix."""


class SiteRuleError(ValueError):
    """A rule broken; carries the key it is about ("" = where pydantic found it) and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        super().__init__(problem)
        self.key, self.problem, self.fix = key, problem, fix


def _public_key(key: str) -> str:
    key = key.strip()
    if "PRIVATE KEY" in key:
        raise SiteRuleError("", "this is a PRIVATE key", "put the public key (the .pub file) here, and treat that private key as leaked")
    if not SSH_KEY_RE.match(key):
        raise SiteRuleError("", "not an OpenSSH public key line", "paste the whole line of the person's .pub file, e.g. 'ssh-ed25519 AAAAC3Nz... budi@kantor'")
    return key


SshKey = Annotated[str, AfterValidator(_public_key)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Admin(Strict):
    """A person who administers the servers (SOP RA-3: own account, escalates with sudo)."""

    name: str = Field(pattern=USER_RE)
    full_name: str = ""
    ssh_keys: list[SshKey] = Field(min_length=1)


class Connection(Strict):
    """How siaga reaches the hosts from the admin workstation."""

    user: str = Field(pattern=USER_RE)
    port: int = Field(22, ge=1, le=65535)
    key_file: Path
    known_hosts_file: Path | None = None

    @field_validator("key_file", "known_hosts_file")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value else value


class SiteGroup(Strict):
    """One physical site: the main data center (`primary`) or the Disaster Recovery Center (`drc`)."""

    label: str = ""
    networks: list[IPvAnyNetwork] = Field(min_length=1)
    hosts: list[str] = Field(min_length=1)


class Host(Strict):
    address: IPvAnyAddress


class AllowlistEntry(Strict):
    """One network SSH is allowed from (SOP RA-2), with the name the remote-repair logbook gives it
    as *jaringan yang digunakan* (SOP RA-5), e.g. "Kantor LPSE", "LKPP". In the site file either a
    bare network (`- 10.10.0.0/24`, no label) or a mapping (`- {network: 10.10.0.0/24, label: Kantor LPSE}`)."""

    network: IPvAnyNetwork
    label: str = Field("", max_length=80)

    def __str__(self) -> str:  # the firewall and `siaga check` print the network
        return str(self.network)

    @field_validator("label")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if any(c in value for c in "\n\r\t"):
            raise SiteRuleError("", "a label is one line", "write a short name such as 'Kantor LPSE' or 'LKPP'")
        return value


_NETWORK = TypeAdapter(IPvAnyNetwork)


def _allowlist_entry(value: Any) -> Any:
    """A bare network is an entry without a label; its error keeps the entry's own key
    (ssh_allowlist[0]) and pydantic's network error, so the usual fix is given."""
    if isinstance(value, (dict, AllowlistEntry)):
        return value
    try:
        return AllowlistEntry(network=_NETWORK.validate_python(value))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PydanticCustomError(err["type"], err["msg"]) from None


AllowEntry = Annotated[AllowlistEntry, BeforeValidator(_allowlist_entry)]


UNIT_RE = re.compile(r"^[A-Za-z0-9@._:-]+\.(service|socket|timer|mount|path|target)$")


class Component(Strict):
    """A service component and its criticality (SOP EM-5: *tingkat kebutuhan*), and how
    `siaga status` checks it: from the hosts named by `run_on` ('active' = the hosts of the
    active site, 'all', a site name or a host name), as `kind`:
    tcp (`target` = host:port connects), http (`target` = URL answers 2xx/3xx, certificate not
    verified) or systemd (`target` = unit is active). SOP IN-4 (software and services watched)."""

    name: str = Field(min_length=1)
    criticality: Literal["Tinggi", "Sedang"]
    kind: Literal["tcp", "http", "systemd"]
    target: str = Field(min_length=1)
    run_on: str = "active"

    @model_validator(mode="after")
    def _target_fits_kind(self) -> Component:
        t = self.target
        if self.kind == "tcp":
            host, _, port = t.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise SiteRuleError("", f"tcp target '{t}' is not host:port", "write e.g. 127.0.0.1:5432 or [::1]:443")
        elif self.kind == "http" and not re.match(r"^https?://[^/\s]+", t):
            raise SiteRuleError("", f"http target '{t}' is not an http(s) URL", "write e.g. https://127.0.0.1/eproc4/")
        elif self.kind == "systemd" and not UNIT_RE.match(t):
            raise SiteRuleError("", f"systemd target '{t}' is not a unit name", "write the unit with its suffix, e.g. spse.service")
        return self


class StatusThresholds(Strict):
    """When `siaga status` says the DRC is not up to date (exit 1): SOP EM-3 (make sure DRC data
    is up to date) for cron and CI."""

    # Database WAL the standby has not replayed yet.
    max_lag_bytes: int = Field(1024 * 1024, ge=0)
    # Seconds the standby's database, or its uploads, are behind primary.
    max_lag_seconds: float = Field(60, gt=0)


class Site(Strict):
    site: str = Field(pattern=NAME_RE)
    # The Debian release of every host (drc/site/platform.py): both sites run the same one, since
    # streaming replication needs the same PostgreSQL major. PostgreSQL's major and pgBackRest come
    # from it; the deploy checks each host's /etc/os-release against it before changing anything.
    platform: Literal[tuple(PLATFORMS)] = DEFAULT_PLATFORM  # type: ignore[valid-type]
    # Which site serves users now: the one fact runbooks change. Everything else follows it: the
    # database primary and the uploads sync's source are here, the backup repository at the other
    # site, the app runs and the web ports open here (derived_from_active_site).
    active_site: str = "primary"
    # The site lost in a disaster, written by `siaga failover` and removed by `siaga failback`
    # (EM-3.2-3.5): its hosts are left out of deploys, nothing is replicated or synced to them, and
    # backups go on into the repository at the serving site (degraded: SOP BK-9 wants it away from
    # the data; the offline media are then the copy away from it).
    lost_site: str | None = None
    # Where siaga runs (SOP RA-1); every address must be inside ssh_allowlist.
    admin_workstations: list[IPvAnyNetwork] = Field(min_length=1)
    # SOP RA-2: remote access only from the office network and permitted addresses; each entry
    # may carry a label, the network's name in the remote-repair logbook (SOP RA-5).
    ssh_allowlist: list[AllowEntry] = Field(min_length=1)
    connection: Connection
    admins: list[Admin] = Field(min_length=1)
    sites: dict[str, SiteGroup]
    hosts: dict[str, Host]
    base: BaseSettings = Field(default_factory=BaseSettings)
    ssh_hardening: SshHardeningSettings = Field(default_factory=SshHardeningSettings)
    firewall: FirewallSettings = Field(default_factory=FirewallSettings)
    # Bans sources that keep failing to log in (sshd, Apache auth); never the site's own (roles/fail2ban).
    fail2ban: Fail2banSettings = Field(default_factory=Fail2banSettings)
    # Kernel settings, auditd rules, console banner (roles/os_hardening).
    os_hardening: OsHardeningSettings = Field(default_factory=OsHardeningSettings)
    postgresql: PostgresqlSettings = Field(default_factory=PostgresqlSettings)
    spse_app: SpseAppSettings = Field(default_factory=SpseAppSettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    uploads_sync: UploadsSyncSettings = Field(default_factory=UploadsSyncSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    # The guard that keeps a superseded primary from accepting writes (roles/fencing, siaga failover).
    fencing: FencingSettings = Field(default_factory=FencingSettings)
    # The remote-repair logbook (roles/logbook, `siaga logbook`): SOP RA-5, RA-6.
    logbook: LogbookSettings = Field(default_factory=LogbookSettings)
    # Security services in front of and around the application (deploys/security.py, SOP IN-2).
    modsecurity: ModsecuritySettings = Field(default_factory=ModsecuritySettings)
    clamav: ClamavSettings = Field(default_factory=ClamavSettings)
    file_integrity: FileIntegritySettings = Field(default_factory=FileIntegritySettings)
    # Prometheus, Alertmanager, exporters and alerts on every server (roles/monitoring; SOP IN-3, IN-4).
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    # SOP EM-5: what `siaga status` checks, with its criticality. Unset: default_components().
    components: list[Component] = Field(default_factory=list)
    status: StatusThresholds = Field(default_factory=StatusThresholds)
    # How users' traffic moves to the active site (drc/site/traffic.py; README: traffic switch).
    traffic: TrafficSettings | None = None
    # Records on the admin workstation (collected backup log, restore reports): append-only, outside
    # the repository. Unset: $XDG_STATE_HOME/siaga/<site>/records (~/.local/state/...). SOP BK-3, BK-7.
    records_dir: Path | None = None

    @field_validator("records_dir")
    @classmethod
    def _expand_records(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value else value

    @model_validator(mode="after")
    def _consistent(self) -> Site:
        _check_platform(self)
        _check_sites(self)
        _derive_from_active_site(self)
        _check_admins(self)
        _check_allowlist(self)
        _check_uploads_sync(self)
        _check_security_updates(self)
        if "components" not in self.model_fields_set:
            self.components = default_components(self)
        _check_components(self)
        _check_monitoring(self)
        if self.traffic:
            check_against_sites(self.traffic, list(self.sites))
        return self

    @property
    def os(self) -> Platform:
        """The site's platform: the Debian release and what siaga takes from it."""
        return PLATFORMS[self.platform]

    @cached_property
    def site_of(self) -> dict[str, str]:
        """Host name -> site role ('primary' or 'drc')."""
        return {h: role for role, group in self.sites.items() for h in group.hosts}

    @property
    def lost_hosts(self) -> list[str]:
        """The hosts of the lost site (none unless a failover left one): out of deploys and syncs."""
        return self.hosts_in(self.lost_site) if self.lost_site else []

    @property
    def serving_alone(self) -> bool:
        return self.lost_site is not None

    def hosts_in(self, role: str) -> list[str]:
        return list(self.sites[role].hosts) if role in self.sites else []

    def peer_addresses(self, host_name: str) -> list[str]:
        """Addresses of the hosts at the other site (replication peers)."""
        mine = self.site_of[host_name]
        return [str(self.hosts[h].address) for h, role in self.site_of.items() if role != mine]

    def hosts_for(self, run_on: str) -> list[str]:
        """The hosts a component's `run_on` names: 'active', 'all', a site or a host."""
        if run_on == "all":
            return list(self.site_of)
        if run_on == "active":
            return self.hosts_in(self.active_site)
        if run_on in SITE_ROLES:
            return self.hosts_in(run_on)
        return [run_on] if run_on in self.hosts else []


def default_components(s: Site) -> list[Component]:
    """SOP EM-5's components this site runs, named by its own settings (also the lab's list).
    Tinggi: the main server (application, database, web server), the main internet link, and
    the database replication the DRC depends on (SOP EM-3). The Sedang ones (training, helpdesk,
    vendor registration, bidding room, PC facilities) differ per LPSE: list them in the site file
    (`components:` replaces this whole list)."""
    port, app = s.firewall.postgresql_port, s.spse_app
    out = [
        Component(name="Server utama: aplikasi SPSE", criticality="Tinggi", kind="systemd", target=app.unit),
        Component(name="Server utama: database PostgreSQL", criticality="Tinggi", kind="tcp", target=f"127.0.0.1:{port}", run_on="all"),
        Component(name="Web server Apache (HTTPS)", criticality="Tinggi", kind="http", target=f"https://127.0.0.1{app.context_path}/"),
        # The main internet link, seen from each server: Debian's mirror, where security updates come from.
        Component(name="Jaringan internet utama", criticality="Tinggi", kind="tcp", target="deb.debian.org:443", run_on="all"),
    ]
    source = s.replication.source_site
    for host in s.hosts_in(source)[:1]:
        standby_site = next(r for r in SITE_ROLES if r != source)
        out.append(Component(name=f"Replikasi database ke {standby_site.upper()}", criticality="Tinggi", kind="tcp",
                             target=f"{s.hosts[host].address}:{port}", run_on=standby_site))
    return out


def _check_platform(s: Site) -> None:
    """PostgreSQL's major is the platform's; a version set by hand must agree with it."""
    want = PLATFORMS[s.platform].postgresql
    if s.postgresql.version is None:
        s.postgresql.version = want
    elif s.postgresql.version != want:
        raise SiteRuleError("postgresql.version", f"PostgreSQL {s.postgresql.version} is not the one of platform "
                            f"'{s.platform}' ({PLATFORMS[s.platform].label} has PostgreSQL {want})",
                            f"remove postgresql.version (it follows the platform), or set it to {want}; "
                            "for another major, change 'platform'")
    apt = s.backup.pgbackrest_apt
    if apt is not None:
        key = Path(apt.key_file).expanduser()
        try:
            key.read_bytes()
        except OSError as exc:
            raise SiteRuleError("backup.pgbackrest_apt.key_file", f"cannot read {key} ({exc.strerror})",
                                "give the path of the repository's signing key on this workstation "
                                "(e.g. apt.postgresql.org's ACCC4CF8.asc)") from None


def _check_sites(s: Site) -> None:
    for role in s.sites:
        if role not in SITE_ROLES:
            raise SiteRuleError(f"sites.{role}", f"unknown site '{role}'", "name the sites 'primary' and 'drc'")
    for role in SITE_ROLES:
        if role not in s.sites:
            raise SiteRuleError("sites", f"site '{role}' is missing", f"add sites.{role} with its networks and hosts")
    if s.active_site not in SITE_ROLES:
        raise SiteRuleError("active_site", f"'{s.active_site}' is not a site", "use 'primary' or 'drc'")
    seen: dict[str, str] = {}
    for role, group in s.sites.items():
        for i, name in enumerate(group.hosts):
            if name in seen:
                raise SiteRuleError(
                    f"sites.{role}.hosts[{i}]",
                    f"host '{name}' is in two sites ('{seen[name]}' and '{role}')",
                    "a server stands in one place: list it under one site only",
                )
            seen[name] = role
            if name not in s.hosts:
                raise SiteRuleError(f"sites.{role}.hosts[{i}]", f"host '{name}' is not defined", f"add hosts.{name}.address")
            address = s.hosts[name].address
            if not any(address in net for net in group.networks):
                raise SiteRuleError(
                    f"hosts.{name}.address",
                    f"{address} is outside the networks of site '{role}'",
                    f"use an address inside {', '.join(map(str, group.networks))} or fix sites.{role}.networks",
                )
    for name in s.hosts:
        if name not in seen:
            raise SiteRuleError(f"hosts.{name}", f"host '{name}' belongs to no site", "list it under sites.primary.hosts or sites.drc.hosts")
    addresses: dict[str, str] = {}
    for name, h in s.hosts.items():
        if str(h.address) in addresses:
            raise SiteRuleError(f"hosts.{name}.address", f"{h.address} is also the address of '{addresses[str(h.address)]}'", "give each host its own address")
        addresses[str(h.address)] = name


def other_site(role: str) -> str:
    return next(r for r in SITE_ROLES if r != role)


def derived_from_active_site(active: str, lost: str | None = None) -> dict[tuple[str, str], str]:
    """(section, key) -> value of every setting that follows the active site (issue 10: one fact
    decides which site serves). With the other site lost, the repository is the one at the serving
    site: it was the standby's, the repository site before the failover."""
    return {("replication", "source_site"): active, ("uploads_sync", "source_site"): active,
            ("backup", "repository_site"): active if lost else other_site(active)}


def _derive_from_active_site(s: Site) -> None:
    if s.lost_site is not None and s.lost_site not in SITE_ROLES:
        raise SiteRuleError("lost_site", f"'{s.lost_site}' is not a site", "use 'primary' or 'drc', or remove lost_site")
    if s.lost_site is not None and s.lost_site == s.active_site:
        raise SiteRuleError("lost_site", f"the lost site '{s.lost_site}' is the active site",
                            "a lost site cannot serve: `siaga failover` sets both; remove lost_site after `siaga failback`")
    for (section, key), value in derived_from_active_site(s.active_site, s.lost_site).items():
        settings = getattr(s, section)
        given = getattr(settings, key)
        if given is not None and given != value:
            raise SiteRuleError(f"{section}.{key}", f"'{given}' contradicts active_site '{s.active_site}' (it must be '{value}')",
                                f"remove {section}.{key}: it follows active_site, the one setting that says which site serves")
        object.__setattr__(settings, key, value)


def _check_admins(s: Site) -> None:
    names = [a.name for a in s.admins]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise SiteRuleError(f"admins[{i}].name", f"admin '{name}' is listed twice", "merge the two entries")
        if name == "root":
            raise SiteRuleError(f"admins[{i}].name", "'root' cannot be an admin (SOP RA-3)", "use the person's own account name")
        if name in s.base.removed_admins:
            raise SiteRuleError("base.removed_admins", f"'{name}' is both an admin and removed", "remove it from one of the two lists")
    if s.connection.user not in names:
        raise SiteRuleError("connection.user", f"'{s.connection.user}' is not one of the admins", "set it to the name of an entry in admins")


def _check_allowlist(s: Site) -> None:
    for i, ws in enumerate(s.admin_workstations):
        if not any(_inside(ws, e.network) for e in s.ssh_allowlist):
            raise SiteRuleError(
                f"admin_workstations[{i}]",
                f"the admin workstation {ws} is not inside ssh_allowlist: the deploy would lock you out",
                f"add {ws} (or its office network) to ssh_allowlist",
            )
    labels: dict[str, int] = {}
    for i, e in enumerate(s.ssh_allowlist):
        if e.network.prefixlen == 0:
            raise SiteRuleError(f"ssh_allowlist[{i}]", f"{e.network} allows the whole internet (SOP RA-2)", "list the office network and permitted addresses only")
        if e.label and labels.setdefault(e.label, i) != i:
            raise SiteRuleError(f"ssh_allowlist[{i}].label", f"label '{e.label}' is also the label of ssh_allowlist[{labels[e.label]}]",
                                "give each network its own label (the logbook names the network a session came from by it)")


def _check_monitoring(s: Site) -> None:
    problem = check_password_file(s.monitoring.mail)
    if problem:
        problem, _, fix = problem.partition(": ")
        raise SiteRuleError("monitoring.mail.auth_password_file", problem, fix)


def _check_components(s: Site) -> None:
    names = [c.name for c in s.components]
    for i, c in enumerate(s.components):
        if names.index(c.name) != i:
            raise SiteRuleError(f"components[{i}].name", f"component '{c.name}' is listed twice", "give each component its own name")
        if not s.hosts_for(c.run_on):
            raise SiteRuleError(f"components[{i}].run_on", f"'{c.run_on}' names no host",
                                "use 'active', 'all', a site (primary, drc) or a host name from hosts")


def _check_uploads_sync(s: Site) -> None:
    """sshd gives members of the sync group rrsync only: an admin there would lose the shell."""
    u = s.uploads_sync
    if u.group == s.base.admin_group or u.group in s.ssh_hardening.extra_allow_groups:
        raise SiteRuleError("uploads_sync.group", f"'{u.group}' is also a login group of people; its members get rrsync only",
                            "give the uploads sync its own group, e.g. 'siaga-sync'")
    account = u.account or s.spse_app.user
    if account in {a.name for a in s.admins}:
        raise SiteRuleError("uploads_sync.account", f"'{account}' is an admin; the sync account gets rrsync only (SOP RA-3)",
                            "use the application's account (leave it unset) or a dedicated one")


def _check_security_updates(s: Site) -> None:
    """Security updates: each site has its daily upgrade time and its weekly reboot window, and the
    two sites' never meet (an update restarts services, a reboot takes the site's service down:
    never both sites at once). SOP IN-2, EM-3."""
    u = s.base.security_updates
    tkey = "base.security_updates.upgrade_times"
    for name, at in u.upgrade_times.items():
        if name not in SITE_ROLES:
            raise SiteRuleError(f"{tkey}.{name}", f"'{name}' is not a site", "name the times 'primary' and 'drc'")
        if not TIME_RE.match(at):
            raise SiteRuleError(f"{tkey}.{name}", f"'{at}' is not a time of day", f"write 'HH:MM' in base.timezone, e.g. '{name}: 05:00'")
    if u.enabled:
        for role in SITE_ROLES:
            if role not in u.upgrade_times:
                raise SiteRuleError(tkey, f"no upgrade time for site '{role}'", f"add {role}: 'HH:MM' (e.g. primary '06:30', drc '05:00')")
        a, b = (u.upgrade_times[role] for role in SITE_ROLES)
        if minutes_apart_in_a_day(a, b) < UPGRADE_GAP_MINUTES:
            raise SiteRuleError(f"{tkey}.drc", f"the drc upgrade time '{b}' is within {UPGRADE_GAP_MINUTES} min of primary's '{a}': "
                                "both sites could restart the services an update replaces at once",
                                f"start them at least {UPGRADE_GAP_MINUTES} minutes apart (e.g. drc '05:00', primary '06:30')")
    r = u.reboot
    key = "base.security_updates.reboot.windows"
    for name, window in r.windows.items():
        if name not in SITE_ROLES:
            raise SiteRuleError(f"{key}.{name}", f"'{name}' is not a site", "name the windows 'primary' and 'drc'")
        if not WINDOW_RE.match(window):
            raise SiteRuleError(f"{key}.{name}", f"'{window}' is not a weekly window start",
                                f"write 'Day HH:MM' in base.timezone, Day one of {', '.join(DAYS)}, e.g. '{name}: Sun 02:00'")
    if not (s.base.security_updates.enabled and r.enabled):
        return
    for role in SITE_ROLES:
        if role not in r.windows:
            raise SiteRuleError(key, f"no reboot window for site '{role}'",
                                f"add {role}: 'Day HH:MM' (e.g. primary 'Sun 02:00', drc 'Sun 04:00'), or set reboot.enabled: false")
    a, b = (r.windows[role] for role in SITE_ROLES)
    if windows_overlap(a, b, r.window_minutes):
        gap = r.window_minutes + REBOOT_SETTLE_MINUTES
        raise SiteRuleError(
            f"{key}.drc",
            f"the drc window '{b}' overlaps the primary window '{a}' ({r.window_minutes} min each, plus "
            f"{REBOOT_SETTLE_MINUTES} min to boot): both sites could reboot at once",
            f"start the two windows at least {gap} minutes apart (e.g. primary 'Sun 02:00', drc 'Sun 04:00')",
        )


def _inside(inner: ipaddress._BaseNetwork, outer: ipaddress._BaseNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)


# --- loading and error messages -------------------------------------------------------------

FIXES = {
    "extra_forbidden": "remove it or check its spelling (see the role README for the settings)",
    "missing": "add it",
    "ip_any_network": "write a network in CIDR form, e.g. 10.10.1.0/24 (host bits zero)",
    "ip_any_address": "write a single address, e.g. 10.10.1.10",
    "string_pattern_mismatch": "use lowercase letters, digits, '-' or '_' and start with a letter",
    "too_short": "give at least one entry",
    "int_parsing": "write a whole number",
    "greater_than_equal": "use a larger number",
    "less_than_equal": "use a smaller number",
    "literal_error": "use one of the allowed values",
    "list_type": "write a list, one '- item' per line",
    "dict_type": "write a mapping, one 'key: value' per line",
    "model_type": "write a mapping, one 'key: value' per line",
    "bool_parsing": "write true or false",
}


def _loose_network(value: Any) -> ipaddress._BaseNetwork | None:
    """The network a CIDR with host bits set means, or None if it is not a CIDR at all."""
    try:
        return ipaddress.ip_network(value, strict=False) if isinstance(value, str) and "/" in value else None
    except ValueError:
        return None


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _line_of(text: str, key: str) -> int | None:
    """Line number of a dotted key in a YAML document, for the error message."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and part.startswith("["):
            idx = int(part[1:-1])
            if idx >= len(node.value):
                return line
            node = node.value[idx]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _where(path: Path, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{path}:{line}" if line else str(path)


def parse_site(data: Any, path: Path, text: str = "") -> Site:
    """Validate already-loaded data; raise SiteError naming file, key and fix."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SiteError(
            f"{path}: key '(top level)': the site file must be a YAML mapping (key: value), not {got}. "
            "Fix: start from inventory/production.example.yaml."
        )
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            ctx_err = err.get("ctx", {}).get("error")
            if isinstance(ctx_err, SiteRuleError) or getattr(ctx_err, "fix", None):  # a role's own (problem, fix)
                key, problem, fix = getattr(ctx_err, "key", None) or _key_path(err["loc"]), ctx_err.problem, ctx_err.fix
            elif err["type"] == "ip_any_network" and (net := _loose_network(err["input"])):
                key, problem = _key_path(err["loc"]), f"{err['input']} has host bits set"
                fix = f"write the network {net}, or {err['input'].split('/')[0]}/{net.max_prefixlen} for that one address"
            else:
                key = _key_path(err["loc"])
                problem = err["msg"].removeprefix("Value error, ")
                if err["type"] == "extra_forbidden":
                    problem = "unknown key"
                elif "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "missing":
                    problem += f" (got {err['input']!r})"
                fix = FIXES.get(err["type"], "see inventory/production.example.yaml for the expected form")
            lines.append(f"{_where(path, text, key)}: key '{key}': {problem}. Fix: {fix}.")
        raise SiteError("\n".join(lines)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (a copied block silently overriding another)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_site(path: str | Path) -> Site:
    """Read and validate a site file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SiteError(f"{path}: cannot read the site file ({exc.strerror}). Fix: give the path of an existing site YAML file.") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark and mark and cmark.line != mark.line:  # e.g. an unclosed '[' lines above
            problem += f", {context} started at line {cmark.line + 1}"
        fix = "indent with spaces, not tabs" if "'\\t'" in problem else "correct the YAML syntax there"
        if "appears twice" in problem:
            fix = "keep one of the two entries (rename it if both are wanted)"
        raise SiteError(f"{where}: not valid YAML ({problem}). Fix: {fix}.") from None
    return parse_site(data, path, text)
