"""roles/postgresql cluster_file: which errors of the running server are the new file's (issue 8
point 8). Runs the role's own `decide` shell function (DECIDE) on the rows PostgreSQL gives
(CONFIG_ERRORS_SQL) before and after the file is replaced."""

from __future__ import annotations

import subprocess

import pytest

from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS
from roles.postgresql.operations import DECIDE, NOT_APPLIED, RESTART_NEEDED

PG = PLATFORMS[DEFAULT_PLATFORM].postgresql  # the default platform's major
CONF = f"/etc/postgresql/{PG}/main/conf.d/siaga.conf"
AUTO = f"/var/lib/postgresql/{PG}/main/postgresql.auto.conf"
MAIN = f"/etc/postgresql/{PG}/main/postgresql.conf"
HBA = f"/etc/postgresql/{PG}/main/pg_hba.conf"
# What a restored primary shows until it restarts: recovery_target* removed from postgresql.auto.conf.
AFTER_RESTORE = [f'||parameter "{p}" {RESTART_NEEDED}' for p in
                 ("recovery_target", "recovery_target_action", "recovery_target_timeline")]


def decide(tmp_path, before: list[str], after: list[str], dest: str = CONF) -> str:
    (tmp_path / "before").write_text("".join(f"{r}\n" for r in before))
    (tmp_path / "after").write_text("".join(f"{r}\n" for r in after))
    out = subprocess.run(["sh", "-c", DECIDE + '\ndecide "$@"', "decide", dest, str(tmp_path / "before"), str(tmp_path / "after")],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("before, after, want", [
    # nothing wrong anywhere: a reload
    ([], [], "reload"),
    # the new file sets a value the server refuses, an unknown setting, a syntax error: rejected
    ([], [f'{CONF}|log_min_duration_statement|invalid value for parameter "log_min_duration_statement": "fast"'], "reject"),
    ([], [f'{CONF}|no_such_setting|unrecognized configuration parameter "no_such_setting"'], "reject"),
    ([], [f'{CONF}||syntax error'], "reject"),
    # the new file changes a restart-only setting: restart
    ([], [f"{CONF}|max_connections|{NOT_APPLIED}"], "restart"),
    # the new file no longer sets a restart-only setting: PostgreSQL names no file; restart
    ([], [f'||parameter "max_wal_senders" {RESTART_NEEDED}'], "restart"),
    # ... or the main file's own value of it now applies and needs one
    ([], [f"{MAIN}|shared_buffers|{NOT_APPLIED}"], "restart"),
    # after a restore: recovery_target* pending a restart, before and after; the new file is fine
    (AFTER_RESTORE, AFTER_RESTORE, "reload"),
    (AFTER_RESTORE + [f"{AUTO}|work_mem|{NOT_APPLIED}"], AFTER_RESTORE + [f"{AUTO}|work_mem|{NOT_APPLIED}"], "reload"),
    # ... and a really bad new file is still refused beside them
    (AFTER_RESTORE, AFTER_RESTORE + [f'{CONF}|work_mem|invalid value for parameter "work_mem": "lots"'], "reject"),
    (AFTER_RESTORE, AFTER_RESTORE + [f"{CONF}|max_connections|{NOT_APPLIED}"], "restart"),
    # an error elsewhere that appeared with the change is the change's
    ([f"{MAIN}|x|old error"], [f"{MAIN}|x|old error", f"{MAIN}|y|new error"], "reject"),
])
def test_decide_counts_only_what_the_new_file_brings(tmp_path, before, after, want):
    assert decide(tmp_path, before, after) == want


def test_a_new_pg_hba_error_rejects_pg_hba_and_is_new_for_any_file(tmp_path):
    row = f"{HBA}|12|invalid authentication method \"trust-me\""
    assert decide(tmp_path, [], [row], dest=HBA) == "reject"
    assert decide(tmp_path, [], [row], dest=CONF) == "reject"
    assert decide(tmp_path, [row], [row], dest=CONF) == "reload"


def test_the_operation_ships_the_decision_it_was_tested_with():
    """cluster_file's host script is DECIDE plus its use: the function tested here is the one run."""
    import inspect

    from roles.postgresql import operations

    src = inspect.getsource(operations.cluster_file)
    assert "{DECIDE}" in src and "decide {dest} {work}.before {work}.after" in src
    assert "pending_restart" not in src  # the old, wrong signal: settings pending from before the change
