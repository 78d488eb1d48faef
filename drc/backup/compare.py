"""What `siaga backup restore-test` compares, from the application profile (`spse_app.restore_test`,
roles/spse_app/defaults.py): the SQL of each table check, the verdict on the rows production and
the restored copy answered, and the sampled files' verdict. Pure functions: the SQL runs through
drc/hostside/restore_probe.py, the rows come back as lists of text. SOP BK-4.

Two ways to compare a table:

- **timestamp**: count and checksum of the rows whose timestamp column is older than the cutoff
  (the backup's start minus the slack; for a point-in-time restore the target), in production and
  in the restored copy. Rows written later are in neither.
- **whole table** (small tables without such a column): every row's md5 from both sides. Equal
  sets match. When they differ, the difference is checked row by row against the transactions the
  restored copy knows: a production row whose inserting transaction (its `xmin`) committed in the
  restored copy existed at the backup's point and was not changed since, so it must be in the
  restored copy; missing there, the restore is bad (**mismatch**). Rows written after the backup
  (their transaction is unknown or did not commit in the restored copy) and rows deleted since
  make the table **changed** since the backup: not comparable beyond the rows unchanged, which
  matched, and not a failure.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from roles.spse_app.defaults import RestoreTestProfile

# Every table with its first NOT NULL timestamptz column (for tables sampled at random).
TABLES_SQL = """SELECT t.table_schema, t.table_name,
  coalesce((SELECT c.column_name FROM information_schema.columns c WHERE c.table_schema = t.table_schema
   AND c.table_name = t.table_name AND c.data_type = 'timestamp with time zone' AND c.is_nullable = 'NO'
   ORDER BY c.ordinal_position LIMIT 1), '')
FROM information_schema.tables t WHERE t.table_type = 'BASE TABLE'
 AND t.table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"""

# The restored copy's verdict on a transaction id: committed there (so before the backup's point).
COMMITTED_BEFORE = ("committed", "frozen", "old")


@dataclass(frozen=True)
class TableCheck:
    schema: str
    table: str
    timestamp_column: str | None  # None: whole table
    source: str  # "profile" or "sampled"

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def fq(self) -> str:
        return f"{ident(self.schema)}.{ident(self.table)}"

    @property
    def method(self) -> str:
        return "timestamp" if self.timestamp_column else "whole"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_tables(profile: RestoreTestProfile, listed: list[list[str]], total: int,
                rng: random.Random) -> tuple[list[TableCheck], list[str]]:
    """The tables to compare: the profile's, always, then others at random up to `total` in all
    (by their timestamptz column if they have one, else whole). A profile table that production
    does not have is a problem."""
    present = {(r[0], r[1]): (r[2] or None) for r in listed}
    problems, checks = [], []
    for t in profile.tables:
        if (t.schema_name, t.table_name) not in present:
            problems.append(f"database: table {t.table} of the application profile (spse_app.restore_test.tables) "
                            "is not in production's database. Fix: correct the profile")
            continue
        checks.append(TableCheck(t.schema_name, t.table_name, t.timestamp_column, "profile"))
    named = {(c.schema, c.table) for c in checks} | {(t.schema_name, t.table_name) for t in profile.tables}
    others = [k for k in present if k not in named]
    for schema, table in rng.sample(others, min(len(others), max(0, total - len(checks)))):
        checks.append(TableCheck(schema, table, present[(schema, table)], "sampled"))
    return checks, problems


def timestamp_sql(c: TableCheck, cutoff: float | None) -> str:
    """Count and checksum of the rows older than cutoff (epoch s; None: every row), and the table's
    row count. A `timestamp without time zone` column is read in the session's zone (the query's
    `tz`: the application's clock)."""
    where = f"WHERE {ident(c.timestamp_column)} < to_timestamp({cutoff:.6f})" if c.timestamp_column and cutoff is not None else ""
    return (f"SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), 'kosong'), "
            f"(SELECT count(*) FROM {c.fq}) FROM {c.fq} t {where}")


def whole_rows_sql(c: TableCheck, limit: int | None) -> str:
    """Each row's md5 and the raw id of the transaction that wrote it (production: at most `limit`
    rows; one more tells the table is too big)."""
    return f"SELECT md5(t::text), t.xmin::text FROM {c.fq} t" + (f" LIMIT {int(limit)}" if limit else "")


def xact_status_sql(xids: list[int]) -> str:
    """In the restored copy: for each 32-bit transaction id production's rows carry, whether it
    committed there. The id is widened against the copy's next id (pg_current_snapshot's xmax):
    at or past it, the transaction is after the backup's point; below it, pg_xact_status says
    (NULL: older than the commit log kept, so committed long ago); ids 0-2 are frozen (old)."""
    arr = "ARRAY[" + ",".join(str(int(x)) for x in sorted(set(xids))) + "]::bigint[]"
    return ("WITH n AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric AS nx), "
            f"x AS (SELECT DISTINCT unnest({arr}) AS raw), "
            "d AS (SELECT raw, nx, ((nx % 4294967296) - raw + 4294967296) % 4294967296 AS back FROM x, n) "
            "SELECT raw, CASE WHEN raw < 3 THEN 'frozen' WHEN back = 0 OR back >= 2147483648 THEN 'after' "
            "ELSE coalesce(pg_xact_status((nx - back)::text::xid8), 'old') END FROM d ORDER BY raw")


def production_queries(checks: list[TableCheck], db: str, cutoff: float, max_rows: int, tz: str) -> list[dict]:
    out = []
    for c in checks:
        sql = timestamp_sql(c, cutoff) if c.timestamp_column else whole_rows_sql(c, max_rows + 1)
        out.append({"key": c.key, "db": db, "tz": tz, "sql": sql})
    return out


def restored_queries(checks: list[TableCheck], db: str, cutoff: float | None, prod: dict, tz: str, max_rows: int) -> list[dict]:
    """The restored copy's queries: timestamp tables as production's (cutoff None: every row, for a
    point-in-time restore), whole tables: every row's md5 and the status of the transactions that
    wrote production's rows."""
    out = []
    for c in checks:
        if c.timestamp_column:
            out.append({"key": c.key, "db": db, "tz": tz, "sql": timestamp_sql(c, cutoff)})
            continue
        rows = ((prod.get(c.key) or {}).get("rows") or [])
        if len(rows) > max_rows:
            continue  # too big for a whole comparison: not read
        out.append({"key": c.key, "db": db, "tz": tz, "sql": whole_rows_sql(c, None)})
        out.append({"key": c.key + "#xacts", "db": db, "tz": tz, "sql": xact_status_sql([int(r[1]) for r in rows])})
    return out


def first_row(q: dict | None) -> list[str] | None:
    return (q.get("rows") or [None])[0] if q and q.get("ok") else None


def timestamp_verdict(prod: dict | None, restored: dict | None) -> dict:
    """Same count and checksum of the rows older than the cutoff on both sides."""
    a, r = first_row(prod), first_row(restored)
    ok = bool(a and r and a[:2] == r[:2])
    return {"method": "timestamp", "production": a, "restored": r, "match": ok, "state": "match" if ok else "mismatch"}


def whole_verdict(prod: dict | None, restored: dict | None, statuses: dict | None, max_rows: int) -> dict:
    """Whole-table comparison (see the module docstring): match, changed since the backup (not
    comparable; not a failure) or mismatch (a row unchanged since before the backup is missing or
    different in the restored copy)."""
    out: dict = {"method": "whole", "production": None, "restored": None, "match": False, "state": "mismatch"}
    if not (prod and prod.get("ok")):
        return out
    p_rows = prod["rows"]
    if len(p_rows) > max_rows:
        out.update(match=None, state="too big", production=[f">{max_rows}"])
        return out
    if not (restored and restored.get("ok") and statuses and statuses.get("ok")):
        return out
    status = {int(r[0]): r[1] for r in statuses["rows"]}
    p = Counter(h for h, _ in p_rows)
    r = Counter(row[0] for row in restored["rows"])
    # Rows of production written by a transaction the restored copy has committed: there at the
    # backup's point and never changed since.
    before = Counter(h for h, x in p_rows if status.get(int(x)) in COMMITTED_BEFORE)
    missing = sum(max(0, n - r[h]) for h, n in before.items())
    new, gone = sum((p - r).values()), sum((r - p).values())
    out.update(production=[str(sum(p.values())), str(sum(before.values()))], restored=[str(sum(r.values()))],
               unchanged=sum(before.values()), missing=missing, new_in_production=new, gone_from_production=gone)
    if missing:
        out.update(match=False, state="mismatch")
    elif new or gone:
        out.update(match=None, state="changed")
    else:
        out.update(match=True, state="match")
    return out


def table_verdict(c: TableCheck, prod: dict, restored: dict, max_rows: int) -> dict:
    if c.timestamp_column:
        v = timestamp_verdict(prod.get(c.key), restored.get(c.key))
    else:
        v = whole_verdict(prod.get(c.key), restored.get(c.key), restored.get(c.key + "#xacts"), max_rows)
    v.update(timestamp_column=c.timestamp_column, source=c.source,
             error=(prod.get(c.key) or {}).get("error") or (restored.get(c.key) or {}).get("error")
             or (restored.get(c.key + "#xacts") or {}).get("error"))
    return v


def table_problem(key: str, v: dict, cutoff: str) -> str | None:
    """The failure a verdict means, or None. A sampled table too big for a whole comparison is
    shown, not failed; a profile table is failed (the profile promised it can be compared)."""
    if v["state"] in ("match", "changed"):
        return None
    if v["state"] == "too big":
        if v["source"] != "profile":
            return None
        return (f"database: table {key}: more rows than whole_table_max_rows ({v['production'][0]}); "
                "Fix: give it a timestamp_column in spse_app.restore_test or raise whole_table_max_rows")
    if v["method"] == "timestamp":
        return (f"database: table {key}: rows older than {cutoff} differ (production {v['production'] and v['production'][:2]}, "
                f"restored {v['restored'] and v['restored'][:2]}; {v.get('error') or ''})")
    if v.get("error") or v.get("missing") is None:
        return f"database: table {key}: not compared: {v.get('error') or 'no answer'}"
    return (f"database: table {key}: {v['missing']} row(s) that production has held unchanged since before the backup "
            f"are missing or different in the restored copy (whole-table comparison)")


def file_verdict(expected: dict[str, str | None], restored: dict[str, str | None]) -> dict[str, dict]:
    """Sampled files: the restored file's sha256 against the expected one (production's own file,
    or the application's record)."""
    return {p: {"expected": want, "restored": restored.get(p), "match": want is not None and restored.get(p) == want}
            for p, want in expected.items()}
