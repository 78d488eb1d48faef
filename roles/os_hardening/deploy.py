"""os_hardening role: kernel and sysctl hardening, unused kernel modules, no core dumps, password
quality and hashing, auditd rules for privileged commands, the console login banner, a private
$TMPDIR per session, /dev/shm noexec, needrestart list-only (controls after devsec.hardening
os_hardening).

SOP IN-2 (security components on the servers), IN-4 (password files, intrusion attempts and
system logs watched).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from roles.managed_files import config_file
from roles.packages import ensure_installed
from roles.ssh_hardening.deploy import render_banner
from roles.templating import MANAGED_HEADER, render

from .facts import AuditAvailable
from .operations import mount_options_applied, sysctl_applied
from .sysctl import SYSCTL, UNUSED_MODULES

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/os_hardening")
SYSCTL_FILE = "/etc/sysctl.d/60-siaga-hardening.conf"
AUDIT_RULES = "/etc/audit/rules.d/60-siaga.rules"
# What auditd watches of siaga's own (made here so the watch exists on a new host before the data tier).
SIAGA_PATHS = ("/etc/siaga", "/usr/local/lib/siaga")
ISSUE_FILE = "/etc/issue"
MODPROBE_FILE = "/etc/modprobe.d/siaga-hardening.conf"
CORE_LIMITS_FILE = "/etc/security/limits.d/60-siaga-no-core.conf"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/60-siaga-no-core.conf"
PWQUALITY_FILE = "/etc/security/pwquality.conf.d/60-siaga.conf"
LOGIN_DEFS = "/etc/login.defs"
IDLE_LOGOUT_FILE = "/etc/profile.d/60-siaga-idle-logout.sh"
FSTAB = "/etc/fstab"
SHM_OPTIONS = ["nosuid", "nodev", "noexec"]
SHM_LINE = f"tmpfs /dev/shm tmpfs rw,{','.join(SHM_OPTIONS)} 0 0"
NEEDRESTART_FILE = "/etc/needrestart/conf.d/60-siaga.conf"


def sysctl_settings(site: Site) -> dict[str, str]:
    s = site.os_hardening
    wanted = {k: v for k, v in SYSCTL.items() if k not in s.sysctl_skip}
    wanted.update(s.sysctl_extra)
    return wanted


def render_sysctl(site: Site) -> str:
    return render(ROLE_DIR, "sysctl.conf.j2", header=HEADER, settings=sysctl_settings(site))


def render_modprobe() -> str:
    return render(ROLE_DIR, "modprobe.conf.j2", header=HEADER, modules=UNUSED_MODULES)


def render_pwquality(site: Site) -> str:
    return render(ROLE_DIR, "pwquality.conf.j2", header=HEADER, min_length=site.os_hardening.password_min_length)


def login_defs(site: Site) -> dict[str, str]:
    """login.defs keys siaga sets: Debian's file stays (a conffile of `login`), only these lines change."""
    rounds = str(site.os_hardening.password_hash_rounds)
    return {"SHA_CRYPT_MIN_ROUNDS": rounds, "SHA_CRYPT_MAX_ROUNDS": rounds}


def render_audit_rules() -> str:
    return render(ROLE_DIR, "audit.rules.j2", header=HEADER, siaga_paths=SIAGA_PATHS)


@deploy("siaga os_hardening")
def os_hardening(site: Site) -> None:
    s = site.os_hardening
    settings = sysctl_settings(site)
    # At boot (systemd-sysctl), and now where this host may write them (a container may not).
    config_file(name=f"Kernel settings at boot {SYSCTL_FILE}", dest=SYSCTL_FILE, content=render_sysctl(site))
    sysctl_applied(name="Kernel settings applied now (where this host may write them)", settings=settings)

    config_file(name=f"Unused kernel modules never loaded {MODPROBE_FILE}", dest=MODPROBE_FILE, content=render_modprobe())

    if not s.core_dumps:
        config_file(name=f"No core dumps from login sessions {CORE_LIMITS_FILE}", dest=CORE_LIMITS_FILE,
                    content=render(ROLE_DIR, "limits-core.conf.j2", header=HEADER))
        config_file(name=f"No core dumps kept by systemd-coredump {COREDUMP_FILE}", dest=COREDUMP_FILE,
                    content=render(ROLE_DIR, "coredump.conf.j2", header=HEADER))
    else:
        for path in (CORE_LIMITS_FILE, COREDUMP_FILE):
            files.file(name=f"Core dumps as Debian has them: {path} absent", path=path, present=False)

    # Passwords: none is needed to log in or to sudo (keys, base.sudo_nopasswd); any set anyway is
    # strong and slow to guess from its hash.
    ensure_installed(["libpam-pwquality"], "password quality (pam_pwquality)")
    config_file(name=f"Password quality {PWQUALITY_FILE}", dest=PWQUALITY_FILE, content=render_pwquality(site))
    for key, value in login_defs(site).items():
        files.line(name=f"{LOGIN_DEFS}: {key} {value}", path=LOGIN_DEFS, line=rf"^{key}\s.*", replace=f"{key} {value}")

    if s.shell_idle_logout_seconds:
        config_file(name=f"Idle shells log out {IDLE_LOGOUT_FILE}", dest=IDLE_LOGOUT_FILE,
                    content=render(ROLE_DIR, "idle-logout.sh.j2", header=HEADER, seconds=s.shell_idle_logout_seconds))
    else:
        files.file(name=f"Idle shells never log out: {IDLE_LOGOUT_FILE} absent", path=IDLE_LOGOUT_FILE, present=False)

    temporary_files(site)
    needrestart(site)

    # The console's login banner, the same notice as SSH's (ssh_hardening.banner).
    if site.ssh_hardening.banner:
        config_file(name=f"Login banner {ISSUE_FILE}", dest=ISSUE_FILE, content=render_banner(site.ssh_hardening))

    if not s.auditd:
        return
    ensure_installed(["auditd"], "auditd (privileged commands, identity files)")
    for path in SIAGA_PATHS:
        files.directory(name=f"{path} (watched by auditd)", path=path, user="root", group="root", mode="755")
    rules = files.put(name=f"auditd rules {AUDIT_RULES}", dest=AUDIT_RULES, src=_io(render_audit_rules()),
                      user="root", group="root", mode="640")
    if host.get_fact(AuditAvailable):
        systemd.service(name="auditd running and enabled", service="auditd", running=True, enabled=True)
        # augenrules merges rules.d into audit.rules and loads it; a bad rule fails the deploy here.
        server.shell(name="auditd rules loaded (augenrules --load)", commands=["augenrules --load"], _if=rules.did_change)
    else:
        host.log_styled("auditd installed and configured, not running: this host's kernel takes no audit rules from it "
                        "(a container: audit is one per machine, systemd-nspawn's seccomp filter refuses its socket; "
                        "or the kernel was booted with audit=0)", fg="yellow")


def temporary_files(site: Site) -> None:
    """A private $TMPDIR per session (libpam-tmpdir), and nothing run from /dev/shm."""
    s = site.os_hardening
    if s.private_tmpdir:
        # Debian's package adds pam_tmpdir to common-session itself (pam-auth-update, Default: yes).
        ensure_installed(["libpam-tmpdir"], "a private $TMPDIR per session (libpam-tmpdir)")
    else:
        apt.packages(name="libpam-tmpdir absent (os_hardening.private_tmpdir: false)", packages=["libpam-tmpdir"], present=False)

    # systemd mounts /dev/shm nosuid,nodev; an fstab line for it is applied at boot by
    # systemd-remount-fs, and the remount applies it now.
    if s.dev_shm_noexec:
        files.line(name=f"{FSTAB}: /dev/shm {','.join(SHM_OPTIONS)} at boot", path=FSTAB, line=r"^\S+\s+/dev/shm\s.*",
                   replace=SHM_LINE)
        mount_options_applied(name=f"/dev/shm {','.join(SHM_OPTIONS)} now", path="/dev/shm", options=SHM_OPTIONS)
    else:
        files.line(name=f"{FSTAB}: siaga's /dev/shm line absent", path=FSTAB, line=SHM_LINE,
                   escape_regex_characters=True, present=False)


def needrestart(site: Site) -> None:
    """needrestart lists, never restarts: its configuration is in place before the package, whose
    first apt hook would otherwise restart services by its default."""
    if site.os_hardening.needrestart:
        config_file(name=f"needrestart lists only {NEEDRESTART_FILE}", dest=NEEDRESTART_FILE,
                    content=render(ROLE_DIR, "needrestart.conf.j2", header=HEADER))
        ensure_installed(["needrestart"], "services running replaced libraries listed after updates (needrestart)")
    else:
        apt.packages(name="needrestart absent (os_hardening.needrestart: false)", packages=["needrestart"], present=False)
        files.file(name=f"{NEEDRESTART_FILE} absent", path=NEEDRESTART_FILE, present=False)


def _io(text: str):
    from io import StringIO

    return StringIO(text)
