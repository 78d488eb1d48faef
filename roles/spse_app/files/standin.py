#!/usr/bin/python3
"""SPSE stand-in: the shape of SPSE (the real installer is not public) with real data.

    standin.py serve CONFIG      serve HTTP on 127.0.0.1:<port>/<context> (foreground)
    standin.py migration CONFIG  apply the schema migrations in <app>/migrations/*.sql

Endpoints under the context path (e.g. /eproc4):
    GET  /health               200 {"status": "ok", ...} when the database can be read AND written
                               and the uploads directory too; 503 with "read-only" on a standby
    POST /dokumen?name=X       body = the file; stored under <uploads_dir>/YYYY/MM/DD/, row in
                               tender_document (id, uploaded_at, name, size, sha256, path); 201
                               with the row and the server's timeline
    GET  /dokumen/<id>         the row as JSON
    GET  /dokumen/<id>/file    the stored file

Debian's python3 and python3-psycopg2 only (no pip on servers). The database is reached over the
local socket as the owner role, mapped from this OS account (pg_ident), so there is no password.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2

CONF: dict = {}


def connect():
    return psycopg2.connect(dbname=CONF["database"], user=CONF["db_user"], connect_timeout=3,
                            application_name=CONF["app_name"])


def migrate() -> int:
    migrations = sorted(Path(CONF["migrations_dir"]).glob("*.sql"))
    conn = connect()
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migration (version int PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())")
        cur.execute("SELECT coalesce(max(version), 0) FROM schema_migration")
        current = cur.fetchone()[0]
        for path in migrations:
            version = int(path.name.split("_", 1)[0])
            if version > current:
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migration (version) VALUES (%s)", (version,))
                print(f"applied migration {path.name}")
    conn.close()
    return 0


def health() -> dict:
    db = {"read": False, "write": False, "in_recovery": None, "error": None}
    try:
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery(), (SELECT count(*) FROM tender_document)")
                db["in_recovery"], db["documents"] = cur.fetchone()
                db["read"] = True
                try:  # a real write, rolled back: a standby refuses it
                    cur.execute("INSERT INTO health_probe (at) VALUES (now())")
                    db["write"] = True
                except psycopg2.Error as exc:
                    db["error"] = exc.pgerror.strip() if exc.pgerror else str(exc)
            conn.rollback()
        finally:
            conn.close()
    except psycopg2.Error as exc:
        db["error"] = str(exc).strip()
    files = {"read": os.access(CONF["uploads_dir"], os.R_OK | os.X_OK), "write": False}
    try:
        probe = Path(CONF["uploads_dir"]) / f".tmp-health-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
        files["write"] = True
    except OSError:
        pass
    if db["read"] and db["write"] and files["read"] and files["write"]:
        status = "ok"
    elif db["read"]:
        status = "read-only"
    else:
        status = "down"
    return {"status": status, "app": CONF["app_name"], "database": db, "files": files}


class Handler(BaseHTTPRequestHandler):
    server_version = "spse-standin/1"

    def log_message(self, fmt, *args):  # one line per request on stderr (the app log)
        sys.stderr.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} {self.address_string()} {fmt % args}\n")

    def _send(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body, default=str) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, dict]:
        url = urlsplit(self.path)
        ctx = CONF["context_path"]
        if url.path != ctx and not url.path.startswith(ctx + "/"):
            return "", {}
        return url.path[len(ctx):] or "/", parse_qs(url.query)

    def do_GET(self):
        path, _ = self._route()
        if path == "/health":
            h = health()
            return self._send(200 if h["status"] == "ok" else 503, h)
        if path == "/":
            return self._send(200, b"<html><body><h1>SPSE (siaga stand-in)</h1></body></html>\n", "text/html")
        m = re.fullmatch(r"/dokumen/(\d+)(/file)?", path)
        if not m:
            return self._send(404, {"error": "not found"})
        with connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, uploaded_at, name, size, sha256, path FROM tender_document WHERE id = %s", (int(m[1]),))
            row = cur.fetchone()
        if row is None:
            return self._send(404, {"error": "no such document"})
        doc = dict(zip(("id", "uploaded_at", "name", "size", "sha256", "path"), row))
        if m[2]:
            return self._send(200, Path(doc["path"]).read_bytes(), "application/octet-stream")
        return self._send(200, doc)

    def do_POST(self):
        path, query = self._route()
        if path != "/dokumen":
            return self._send(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > CONF["max_upload_bytes"]:
            return self._send(413, {"error": f"body must be 1..{CONF['max_upload_bytes']} bytes"})
        name = re.sub(r"[^A-Za-z0-9._-]", "_", (query.get("name") or ["dokumen"])[0])[:100]
        data = self.rfile.read(length)
        digest = hashlib.sha256(data).hexdigest()
        now = datetime.datetime.now()
        folder = Path(CONF["uploads_dir"]) / now.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{uuid.uuid4().hex}-{name}"
        tmp = folder / f".tmp-{final.name}"
        with open(tmp, "wb") as fh:  # written whole and synced before it gets its name
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, final)
        try:
            with connect() as conn, conn.cursor() as cur:
                cur.execute("INSERT INTO tender_document (name, size, sha256, path) VALUES (%s, %s, %s, %s) "
                            "RETURNING id, uploaded_at", (name, len(data), digest, str(final)))
                doc_id, at = cur.fetchone()
                # The timeline the row was written on (a WAL file name starts with it): the probe logs
                # it, so a write acknowledged by a server that was later left behind shows.
                cur.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
                timeline = int(cur.fetchone()[0][:8], 16)
        except psycopg2.Error as exc:
            final.unlink(missing_ok=True)
            return self._send(503, {"error": (exc.pgerror or str(exc)).strip()})
        return self._send(201, {"id": doc_id, "uploaded_at": at, "name": name, "size": len(data),
                                "sha256": digest, "path": str(final), "timeline": timeline})


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("serve", "migration"):
        print(__doc__, file=sys.stderr)
        return 2
    CONF.update(json.loads(Path(argv[2]).read_text()))
    if argv[1] == "migration":
        return migrate()
    server = ThreadingHTTPServer(("127.0.0.1", CONF["listen_port"]), Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
