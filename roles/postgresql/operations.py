"""Operations on PostgreSQL that pyinfra lacks (or that would put a password on a command line).
Each reads facts and yields commands; SQL with a secret travels in an uploaded 0600 file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import Sha1File

from roles.workstation_secrets import sha1_text

from .facts import PgDatabases, PgRoles

NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def _name(kind: str, value: str) -> str:
    if not NAME.match(value):
        raise OperationError(f"{kind} {value!r}: use lowercase letters, digits and '_'")
    return value


def as_postgres_sql(sql: str, database: str = "postgres") -> StringCommand:
    return StringCommand("runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
                         "-d", QuoteString(database), "-c", QuoteString(sql))


# --- SCRAM: the server keeps a verifier; siaga compares and makes verifiers on the workstation --

def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    return stored, server


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (ASCII passwords only)."""
    salt = salt or os.urandom(16)
    stored, server = _scram_keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def verifier_matches(verifier: str | None, password: str) -> bool:
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier or "")
    if not m:
        return False
    stored, server = _scram_keys(password, base64.b64decode(m[2]), int(m[1]))
    return hmac.compare_digest(stored, base64.b64decode(m[3])) and hmac.compare_digest(server, base64.b64decode(m[4]))


@operation()
def role(role: str, login: bool = True, replication: bool = False, password: str | None = None):
    """
    A PostgreSQL role with these flags and, if given, this password.

    + role: role name
    + login: may log in
    + replication: may open replication connections
    + password: plaintext, from the admin workstation; only a SCRAM verifier made there reaches the
      host, inside an uploaded 0600 SQL file removed after use (never on a command line)
    """
    _name("role", role)
    current = host.get_fact(PgRoles).get(role)
    flags = f"{'LOGIN' if login else 'NOLOGIN'} {'REPLICATION' if replication else 'NOREPLICATION'}"
    if current is None:
        yield as_postgres_sql(f"CREATE ROLE {role} {flags}")
    elif current["login"] != login or current["replication"] != replication:
        yield as_postgres_sql(f"ALTER ROLE {role} {flags}")
    password_ok = password is None or (current is not None and verifier_matches(current["verifier"], password))
    if not password_ok:
        sql_file = f"/run/siaga-role-{role}.sql"
        staging = f"/run/siaga-upload-{host.data.get('ssh_user') or 'root'}"
        yield StringCommand("install", "-d", "-m", "700", "-o", QuoteString(host.data.get("ssh_user") or "root"), staging)
        yield StringCommand("install", "-m", "600", "/dev/null", sql_file)
        yield FileUploadCommand(StringIO(f"ALTER ROLE {role} PASSWORD '{scram_verifier(password)}';\n"), sql_file,
                                remote_temp_filename=f"{staging}/{role}.sql")
        # root opens the file and hands it to psql on stdin; it is gone whatever psql does.
        yield StringCommand("sh", "-c", QuoteString(
            f"runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d postgres < {sql_file}; rc=$?; rm -f {sql_file}; exit $rc"))
    if current is not None and current["login"] == login and current["replication"] == replication and password_ok:
        host.noop(f"role {role} is as wanted")


@operation()
def database(database: str, owner: str):
    """
    A database owned by `owner` (created empty from template0, UTF-8).

    + database: database name
    + owner: its owner role (must exist)
    """
    name = _name("database", database)
    _name("owner", owner)
    current = host.get_fact(PgDatabases)
    if name not in current:
        yield StringCommand("runuser", "-u", "postgres", "--", "createdb", "-T", "template0", "-E", "UTF8",
                            "-O", owner, name)
    elif current[name] != owner:
        yield as_postgres_sql(f"ALTER DATABASE {name} OWNER TO {owner}")
    else:
        host.noop(f"database {name} owned by {owner}")


# Every error the server sees in its configuration files (pg_file_settings re-reads them at each
# query) and in pg_hba.conf, one per line: "<file>|<setting or line>|<error>".
CONFIG_ERRORS_SQL = (
    "SELECT coalesce(sourcefile, '') || '|' || coalesce(name, '') || '|' || error FROM pg_file_settings "
    "WHERE error IS NOT NULL UNION ALL "
    "SELECT current_setting('hba_file') || '|' || line_number || '|' || error FROM pg_hba_file_rules WHERE error IS NOT NULL"
)
NOT_APPLIED = "setting could not be applied"
RESTART_NEEDED = "cannot be changed without restarting the server"

# decide FILE BEFORE AFTER: what the new FILE asks of the running server, from the errors it saw
# before the file was replaced and after (CONFIG_ERRORS_SQL). Only what the new file brings counts:
#   reject   an error in FILE itself, or an error elsewhere that was not there before (a bad value,
#            an unknown setting, a syntax error);
#   restart  a setting of FILE needs a restart (NOT_APPLIED in FILE), or the change left another
#            setting needing one (a new NOT_APPLIED elsewhere; a restart-only setting the file no
#            longer sets: PostgreSQL reports that with no file);
#   reload   otherwise.
# Errors that were there before and are not in FILE are not this file's: e.g. after a restore,
# recovery_target* removed from postgresql.auto.conf and pending a restart.
DECIDE = r"""
decide() {
  awk -F'|' -v f="$1" -v na='NOT_APPLIED' -v rn='RESTART_NEEDED' '
    FILENAME == ARGV[1] { seen[$0] = 1; next }
    { err = $0; sub(/^[^|]*[|][^|]*[|]/, "", err); ours = ($1 == f); known = ($0 in seen) }
    ours && err != na { bad = 1 }
    ours && err == na { restart = 1 }
    !ours && !known && (err == na || index(err, rn) > 0) { restart = 1 }
    !ours && !known && !(err == na || index(err, rn) > 0) { bad = 1 }
    END { print (bad ? "reject" : (restart ? "restart" : "reload")) }' "$2" "$3"
}
""".replace("NOT_APPLIED", NOT_APPLIED).replace("RESTART_NEEDED", RESTART_NEEDED)


@operation()
def cluster_file(dest: str, content: str, version: str, cluster: str):
    """
    A configuration file of a Debian PostgreSQL cluster (/etc/postgresql/<version>/<cluster>/...).

    A running server re-reads it: reload when that is enough, restart only when a changed
    setting needs one. If the server reports an error that the new file brings (DECIDE), the old
    file is put back and the operation fails, so the next restart cannot be broken by it. Errors
    the server already had before (e.g. settings pending a restart after a restore) are not the
    new file's and do not count.

    + dest: path of the file
    + content: its text
    + version, cluster: the Debian cluster
    """
    if host.get_fact(Sha1File, path=dest) == sha1_text(content):
        host.noop(f"{dest} is up to date")
        return
    ssh_user = host.data.get("ssh_user") or "root"
    psql = "runuser -u postgres -- psql -XAtq -d postgres -c"
    work = f"/run/siaga-pgconf-{sha1_text(dest)[:12]}"
    running = f"pg_ctlcluster {version} {cluster} status >/dev/null 2>&1"
    errors = f'{psql} "{CONFIG_ERRORS_SQL}"'
    yield StringCommand("install", "-d", "-m", "700", "-o", QuoteString(ssh_user), f"/run/siaga-upload-{ssh_user}")
    # What the server sees wrong before the change, to tell the new file's errors from older ones.
    yield StringCommand("sh", "-c", QuoteString(
        f"if {running}; then {errors} > {work}.before || exit 1; else : > {work}.before; fi; "
        f"if [ -f {dest} ]; then cp -p {dest} {dest}.siaga-old; fi"))
    yield FileUploadCommand(StringIO(content), dest, remote_temp_filename=f"/run/siaga-upload-{ssh_user}/{sha1_text(dest)}")
    yield StringCommand("chown", "postgres:postgres", QuoteString(dest))
    yield StringCommand("chmod", "640", QuoteString(dest))
    script = f"""{DECIDE}
if ! {running}; then rm -f {dest}.siaga-old {work}.before; exit 0; fi
if ! {errors} > {work}.after; then
  if [ -f {dest}.siaga-old ]; then mv -f {dest}.siaga-old {dest}; else rm -f {dest}; fi
  echo "siaga: cannot read PostgreSQL's view of the new {dest}; the previous one is back in place" >&2; exit 1
fi
decision=$(decide {dest} {work}.before {work}.after)
if [ "$decision" = reject ]; then
  if [ -f {dest}.siaga-old ]; then mv -f {dest}.siaga-old {dest}; else rm -f {dest}; fi
  echo "siaga: PostgreSQL rejects the new {dest}; the previous one is back in place" >&2
  grep -Fxv -f {work}.before {work}.after >&2; grep -F "{dest}|" {work}.after >&2
  rm -f {work}.before {work}.after; exit 1
fi
rm -f {dest}.siaga-old {work}.before {work}.after
if [ "$decision" = restart ]; then
  pg_ctlcluster {version} {cluster} restart
else
  pg_ctlcluster {version} {cluster} reload
fi
"""
    yield StringCommand("sh", "-c", QuoteString(script))
