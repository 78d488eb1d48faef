"""nftables operations (pyinfra has none): a ruleset applied with automatic rollback.

SOP RA-2 (SSH only from permitted addresses) and IN-2 (firewall), without ever locking the
operator out: a new ruleset only stays if a *new* SSH session from the admin workstation still
gets in; otherwise a timer on the host puts the previous ruleset back.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.systemd import SystemdEnabled

from roles import admin_confirm
from roles.managed_files import checked, is_current, log_diff, upload

from .facts import NftablesTable

ROLLBACK_UNIT = "siaga-firewall-rollback"
BLOCKED_MESSAGE = "new firewall rules blocked admin SSH; the previous ruleset was restored"


def rollback_script(table: str, path: str, state_dir: str) -> str:
    return f"""#!/bin/sh
# Managed by siaga (roles/firewall). Started by the transient timer {ROLLBACK_UNIT} when a new
# ruleset was not confirmed in time: puts back table inet {table} and {path} as they were before.
nft -f {state_dir}/previous.nft || exit 1
if [ -e {state_dir}/previous.conf ]; then cp -p {state_dir}/previous.conf {path}; else rm -f {path}; fi
logger -t siaga-firewall "new ruleset not confirmed: previous table inet {table} and {path} restored"
"""


@operation()
def nftables_ruleset(
    content: str,
    version: str,
    rollback_seconds: int = 60,
    table: str = "siaga",
    path: str = "/etc/nftables.conf",
    state_dir: str = "/var/lib/siaga/firewall",
):
    """
    Apply an nftables ruleset that owns one table, with automatic rollback.

    + content: the ruleset file; it must replace only ``table inet <table>`` (other tables stay)
    + version: the table comment ``content`` sets; how the loaded table is recognised
    + rollback_seconds: the previous ruleset comes back after this long unless confirmed
    + table: the inet table the ruleset owns
    + path: the file nftables.service loads at boot
    + state_dir: where the previous ruleset and the rollback script are kept on the host

    Steps when something differs: check the file with ``nft -c -f``; save the loaded table and
    ``path``; schedule their restore with a transient systemd timer; load the new ruleset; from
    the controller, open a NEW SSH session (the running one survives through conntrack, so it
    proves nothing). If it gets in: install ``path``, cancel the timer, enable nftables.service.
    If not: wait for the timer to restore the previous ruleset and fail.
    """
    loaded = host.get_fact(NftablesTable, family="inet", table=table)
    table_current = bool(loaded) and loaded["comment"] == version
    enabled = host.get_fact(SystemdEnabled, services=["nftables.service"]).get("nftables.service", False)

    if table_current and is_current(path, content):
        if enabled:
            host.noop(f"table inet {table} is loaded and {path} is up to date")
        else:
            yield StringCommand("systemctl", "enable", "--quiet", "nftables.service")
        return

    log_diff(path, content)
    staged = f"{state_dir}/nftables.conf.new"
    previous = f"{state_dir}/previous.nft"
    script = f"{state_dir}/rollback.sh"

    yield StringCommand("install", "-d", "-m", "700", QuoteString(state_dir))
    yield from upload(content, staged, 0o644)
    yield checked(
        StringCommand("nft", "-c", "-f", QuoteString(staged)), staged,
        "nft -c rejected the new ruleset (see the error above); nothing was changed",
    )

    # Save what is loaded now (only our table) and the boot file, and prove the saved copy loads.
    yield from upload(rollback_script(table, path, state_dir), script, 0o700)
    yield StringCommand(
        "{", "echo", QuoteString(f"table inet {table} {{}}"), ";",
        "echo", QuoteString(f"delete table inet {table}"), ";",
        "nft", "list", "table", "inet", QuoteString(table), "2>/dev/null", "||", "true", ";", "}",
        ">", QuoteString(previous),
    )
    yield checked(
        StringCommand("nft", "-c", "-f", QuoteString(previous)), staged,
        f"the loaded table inet {table} could not be saved in a form nft reloads; nothing was changed",
    )
    yield StringCommand(
        "rm", "-f", QuoteString(f"{state_dir}/previous.conf"), "&&",
        "{", "test", "!", "-e", QuoteString(path), "||",
        "cp", "-p", QuoteString(path), QuoteString(f"{state_dir}/previous.conf"), ";", "}",
    )

    # The rollback is armed before anything changes (roles/admin_confirm.py).
    yield admin_confirm.arm(ROLLBACK_UNIT, script, rollback_seconds)
    yield StringCommand("nft", "-f", QuoteString(staged))
    yield from admin_confirm.confirm(rollback_seconds, script, BLOCKED_MESSAGE, "new firewall rules")

    # Confirmed: make it the boot ruleset, then disarm the rollback.
    yield StringCommand(
        "cp", QuoteString(staged), QuoteString(f"{path}.siaga-new"), "&&",
        "chmod", "755", QuoteString(f"{path}.siaga-new"), "&&",
        "mv", "-f", QuoteString(f"{path}.siaga-new"), QuoteString(path),
    )
    yield admin_confirm.disarm(ROLLBACK_UNIT)
    # If the timer fired before it was stopped, the previous ruleset is back: say so.
    yield StringCommand(
        "nft", "list", "table", "inet", QuoteString(table), "|", "grep", "-qF", QuoteString(f'comment "{version}"'),
        "||", "{", "echo", QuoteString(
            f"siaga: the rollback timer fired before the new ruleset was confirmed; the previous ruleset "
            f"and {path} are back. Re-run, or raise firewall.rollback_seconds",
        ), ">&2;", "exit", "1;", "}",
    )
    if not enabled:
        yield StringCommand("systemctl", "enable", "--quiet", "nftables.service")
    yield StringCommand("rm", "-f", QuoteString(staged))

