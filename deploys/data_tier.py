"""The data tier: `pyinfra inventory/<site>.py deploys/data_tier.py [--dry --diff]`.

PostgreSQL on every host, the SPSE application (running on the active site only), streaming
replication from the database primary to the standbys, and uploads copied the same way. Which
host is primary comes from the site file (replication.source_site); the replication preflight
reads PostgreSQL itself on every host and stops the deploy before any change if the two disagree.
Idempotent: a second run changes nothing. SOP EM-3 (DRC data up to date), EM-5, IN-4.
"""

from pyinfra import host, state
from pyinfra.facts.files import File
from pyinfra.api.exceptions import DeployError

from roles import secret_custody
from roles.backup.deploy import backup, backup_keys, init_marker
from roles.backup.layout import RUNNER
from roles.backup import prechange
from roles.backup.operations import prechange_backup
from drc.hosts.inventory import this_host_in_site
from drc.site.data_tier import data_tier_of
from roles.fencing.deploy import fencing
from roles.postgresql.deploy import postgresql
from roles.replication.deploy import preflight_problems, read_nodes, replication
from roles.spse_app.deploy import spse_app
from roles.uploads_sync.deploy import uploads_sync

site, host_name = this_host_in_site()
tier = data_tier_of(site)
is_source = host_name in tier.db_source_hosts

# Preflight: PostgreSQL itself, on every host, must agree with the site file (never trust labels).
nodes = read_nodes(tier)
problems = preflight_problems(tier, nodes)
if problems:
    raise DeployError("data tier preflight failed:\n  - " + "\n  - ".join(problems))

# Secret custody (roles/secret_custody.py, SOP BK-8): the workstation's secrets agree with those the
# hosts hold (a missing one is fetched from them, a new site's made) or the deploy stops here, before
# any operation on any host. An existing secret is never replaced implicitly.
secret_custody.reconcile(tier)

# The backup accounts' keys, in root-owned files sshd reads (roles/backup/keys.py), before the BK-2
# backup below logs in with them (a site upgraded from keys in the accounts' homes needs them now).
backup_keys(tier, host_name)

# SOP BK-2: before anything below changes the database or the application on the data host, a
# backup of what the change touches, taken where each set runs: the database on the repository host
# (pgBackRest), the file sets on the data host (restic). Decided now, from the data host's files
# (roles/backup/prechange.py), so the plan and --dry show it with its reason. One call site for both
# hosts: pyinfra runs it on both before the first operation below, and a failed backup stops the
# whole deploy there (FAIL_PERCENT=0), before any change on any host.
if site.backup.enabled:
    bk2 = prechange.plan_for_deploy(tier, nodes)
    if bk2.needed:
        state.config.FAIL_PERCENT = 0
    if host_name in (bk2.data_host, bk2.repository_host):
        prechange_backup(name=bk2.step_name(host_name), runner=RUNNER, sets=bk2.sets_on(host_name), why=bk2.because(),
                         ready=bool(host.get_fact(File, path=init_marker(tier))) and bool(host.get_fact(File, path=RUNNER)),
                         by=prechange.operator(), skip_reason=prechange.skip_reason() if bk2.needed else "",
                         record_skip=host_name == bk2.data_host, problem=bk2.problem if host_name == bk2.data_host else "")

postgresql(site, host_name, tier.postgresql, is_source=is_source, replication_user=tier.replication.user,
           app_os_users=[tier.spse_app.user])
spse_app(site, host_name, tier.spse_app, tier.postgresql, is_db_source=is_source)
replication(tier, host_name, nodes)
# The fence guard before PostgreSQL, the app and the uploads sync start (after replication: it asks
# the peer over the replication login). SOP EM-3: never two writable primaries.
fencing(tier, host_name)
# Uploads (/home/file/...) copied from uploads_sync.source_site to the other site (lsyncd, rrsync).
uploads_sync(tier, host_name)

# Backups (pgBackRest + restic to the repository site, offline media, timers, log): SOP BK-1..BK-9.
backup(tier, host_name)
