"""The workstation's copy on the DRC (issue 11 point 4): pushed after every command that used the
records, checked, read back by a restore.

Where: `/var/lib/siaga/workstation-mirror/<site>/` on every host of the DRC site, root-owned, 0700,
every file 0600. What: drc/records/mirror.py (the site file, its public files, the records; never
a secret). How: over the admin's SSH (drc.hosts.remote: strict host keys, deadlines); the copy is
uploaded by sftp into the admin's home, then the host program `workstation-mirror`
(drc/hostside/workstation_mirror.py, shipped by roles/base; sudo) unpacks it beside the old copy
and swaps the two under an flock, so the DRC holds the old copy or the new one, never half of
one. The swap happens only if the copy there is the one this workstation last wrote (its
MIRROR.json's sha256): a copy made by another workstation (a clean test directory, a second PC,
an old workstation after a restore took over) is never replaced by accident (`siaga workstation
mirror --take-over` does it on purpose).

A push that fails never fails the command: a warning, the state marked behind, and a failure
record that the next push carries to the DRC.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from drc.hosts import remote
from drc.records import mirror as m
from drc.records import store
from drc.site import Site

ROOT = "/var/lib/siaga/workstation-mirror"
DEADLINE_S = 90.0
# Off for a run: SIAGA_WORKSTATION_MIRROR=off (a scratch copy of a site file, a bench).
ENV = "SIAGA_WORKSTATION_MIRROR"
# Commands that never push: the lab's own, and this package's (they push or refuse by themselves).
NO_PUSH = ("lab", "workstation")


def mirror_hosts(site: Site) -> list[str]:
    """The hosts that keep the copy: the DRC site's (the workstation sits at the main site)."""
    return site.hosts_in("drc")


def remote_dir(site_name: str) -> str:
    return f"{ROOT}/{site_name}"


def sha(text: str | bytes) -> str:
    return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()


# --- reading the copy ----------------------------------------------------------------------------

PROGRAM = "workstation_mirror"  # drc/hostside/workstation_mirror.py, shipped by roles/base


def answer_of(r: remote.Result) -> dict:
    """The host program's JSON answer, or {"ok": False, "error"} saying why there is none."""
    if not r.reachable:
        return {"ok": False, "unreachable": True, "error": r.error}
    missing = remote.program_missing(r, PROGRAM)
    if missing:
        return {"ok": False, "error": missing}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{r.host}: workstation-mirror exited {r.exited}: {(r.stderr or r.stdout).strip()[-300:]}"}


def parse_manifest_answer(a: dict) -> dict:
    """{"state": "absent"|"present"|"unreachable"|"error", "manifest", "sha", "error"}."""
    if not a.get("ok"):
        return {"state": "unreachable" if a.get("unreachable") else "error", "error": a.get("error")}
    if a["state"] == "absent":
        return {"state": "absent"}
    try:
        return {"state": "present", "manifest": json.loads(a["manifest"]), "sha": a["sha"]}
    except ValueError:
        return {"state": "error", "error": f"{m.MANIFEST} there is not JSON"}


def read_manifest(site: Site, host: str) -> dict:
    r = remote.run_program(site, host, PROGRAM, {"mode": "read", "site": site.site}, timeout=30)
    return parse_manifest_answer(answer_of(r))


# --- pushing -------------------------------------------------------------------------------------

def push_host(site: Site, host: str, data: bytes, expect: str | None, force: bool) -> dict:
    """Upload the copy into the admin's home (sftp) and have root swap it in: {"ok", "conflict", "error"}."""
    name = f".siaga-mirror-{m.new_id()}.tgz"
    try:
        with remote.connection(site, host) as conn:
            sftp = conn.sftp()
            upload = f"{sftp.normalize('.')}/{name}"
            with sftp.file(upload, "wx") as fh:
                sftp.chmod(upload, 0o600)
                fh.write(data)
            args = {"mode": "swap", "site": site.site, "upload": upload, "expect": expect, "force": force}
            r = conn.run(remote.program_command(PROGRAM, args), hide=True, warn=True, in_stream=False, timeout=120)
            if r.exited != 0:  # the program removes the upload itself; not when it never ran
                with contextlib.suppress(Exception):
                    sftp.remove(upload)
    except Exception as exc:  # noqa: BLE001 (any failure to reach the host is reported, with why)
        return {"ok": False, "error": remote.why(exc)}
    a = answer_of(remote.Result(host, reachable=True, exited=r.exited, stdout=r.stdout, stderr=r.stderr))
    if a.get("conflict"):
        return {"ok": False, "conflict": a["conflict"]}
    return {"ok": True} if a.get("ok") else {"ok": False, "error": a.get("error")}


# One push at a time in this process (the state file): a runbook's background push and the command's last.
_push_lock = threading.RLock()


def push(site: Site, site_file: Path, force: bool = False, items: tuple | None = None) -> dict:
    """Send the workstation's copy to every DRC host. Never raises for a host problem: the result
    says per host what happened, and the state (and a failure record) say when the copy is behind."""
    with _push_lock:
        return _push(site, site_file, force, items)


def _push(site: Site, site_file: Path, force: bool, items: tuple | None) -> dict:
    state = m.ensure_identity(m.read_state(site))
    entries, named = items or m.entries(site, Path(site_file))
    seq = int(state.get("seq", 0)) + 1
    man = m.manifest(site, entries, named, state, seq)
    text = json.dumps(man, indent=1, sort_keys=True) + "\n"
    data = m.tarball(entries, text)
    hosts = mirror_hosts(site)

    def one(host: str) -> dict:
        expect = state["hosts"].get(host, {}).get("mirror_sha")
        res = push_host(site, host, data, expect, force)
        if res.get("conflict") and res["conflict"] != "absent":
            # Our own copy whose bookkeeping was lost (a crash after the swap): same instance.
            there = read_manifest(site, host)
            if there.get("state") == "present" and there["manifest"].get("instance") == state["instance"]:
                res = push_host(site, host, data, res["conflict"], force)
            elif there.get("state") == "present":
                o = there["manifest"]
                whose = ("a workstation restored from this one's copy" if o.get("lineage") == state["lineage"]
                         else f"lineage {o.get('lineage')}, this one {state['lineage']}")
                res["error"] = (f"the copy on {host} was written by another workstation ({o.get('pushed_by')} at {o.get('pushed_at')}, "
                                f"{whose}): not replaced. Fix: if this workstation takes over, run `siaga workstation mirror "
                                f"--take-over`; if it is a scratch copy, set {ENV}=off")
        return res

    results = remote.parallel(hosts, one, DEADLINE_S, lambda h: {"ok": False, "error": f"{h}: no answer within {DEADLINE_S:.0f} s"})
    at = m.now()
    for host, res in results.items():
        h = state["hosts"].setdefault(host, {})
        if res.get("ok"):
            h.update({"mirror_sha": sha(text), "pushed_at": at, "seq": seq, "error": None})
        else:
            h.update({"error": res.get("error") or f"conflict: the copy there is {res.get('conflict')}", "failed_at": at})
    ok = bool(hosts) and all(r.get("ok") for r in results.values())
    state["seq"] = seq
    if ok:
        state.update({"files": man["files"], "pushed_at": at, "behind_since": None})
    else:
        state["behind_since"] = state.get("behind_since") or at
    m.write_state(site, state)
    if not ok:
        why = "; ".join(f"{h}: {r.get('error') or r.get('conflict')}" for h, r in results.items() if not r.get("ok")) \
            or "the site has no DRC host"
        store.append_new(store.records_path(site) / m.FAILURES, [{
            "id": f"mirror-failed-{at}-{seq}", "kind": "workstation-mirror", "result": "failure", "at": at,
            "hosts": sorted(h for h, r in results.items() if not r.get("ok")), "error": why[:2000]}])
    return {"ok": ok, "seq": seq, "files": len(entries), "bytes": len(data), "hosts": results,
            "behind_since": state.get("behind_since")}


def changed_since_push(site: Site, site_file: Path) -> tuple[bool, tuple]:
    """Whether the workstation's files differ from the copy last sent to every DRC host."""
    items = m.entries(site, Path(site_file))
    state = m.read_state(site)
    behind = state.get("behind_since") or state.get("files") != m.files_of(items[0]) or \
        any(not state.get("hosts", {}).get(h, {}).get("mirror_sha") for h in mirror_hosts(site))
    return bool(behind), items


def sync(site: Site, site_file: Path) -> dict | None:
    """Push when anything changed since the last push (None: nothing to send)."""
    changed, items = changed_since_push(site, site_file)
    return push(site, site_file, items=items) if changed else None


# --- a runbook's step ends: in the background -------------------------------------------------------

_bg_guard = threading.Lock()
_bg: dict = {"thread": None}


def push_soon(site: Site, site_file: Path) -> None:
    """At a runbook step's end: push in a background thread, never waiting (a switch-over's outage
    is made of its steps). One push at a time; a call while one runs makes one more after it."""
    if os.environ.get(ENV, "on") == "off":
        return
    with _bg_guard:
        _bg["next"] = (site, Path(site_file))
        if _bg["thread"] is not None and _bg["thread"].is_alive():
            return
        _bg["thread"] = threading.Thread(target=_background, daemon=True, name="siaga-mirror")
        _bg["thread"].start()


def _background() -> None:
    while True:
        with _bg_guard:
            job = _bg.pop("next", None)
            if job is None:
                _bg["thread"] = None
                return
        with contextlib.suppress(Exception):  # the command's last push reports what is wrong
            sync(*job)


def wait_background(timeout: float = DEADLINE_S + 30) -> None:
    t = _bg["thread"]
    if t is not None:
        t.join(timeout)


# --- after each command ----------------------------------------------------------------------------

def _after(args: Any, console) -> None:
    site_file = getattr(args, "site", None)
    if os.environ.get(ENV, "on") == "off" or not site_file or getattr(args, "cmd", None) in NO_PUSH:
        return
    wait_background()
    used = store.used()
    if not used and args.cmd != "deploy":
        return
    try:
        from drc.site import load_site

        site = load_site(site_file)
        if store.records_path(site).expanduser().resolve() not in used and args.cmd != "deploy":
            return
        res = sync(site, Path(site_file))
    except Exception as exc:  # noqa: BLE001 (a mirror problem never fails the command)
        console.print(f"[yellow]warning:[/yellow] the workstation's copy on the DRC was not updated: {exc}", highlight=False)
        return
    if res is None:
        return
    if res["ok"]:
        console.print(f"[dim]workstation copy on {', '.join(res['hosts'])} updated ({res['files']} files)[/dim]", highlight=False)
    else:
        for host, r in res["hosts"].items():
            if not r.get("ok"):
                console.print(f"[yellow]warning:[/yellow] the workstation's copy on {host} is behind since {res['behind_since']}: "
                              f"{r.get('error') or r.get('conflict')}", highlight=False, markup=True)
        if not res["hosts"]:
            console.print("[yellow]warning:[/yellow] the site has no DRC host to keep the workstation's copy", highlight=False)


@contextmanager
def after_command(args: Any, console):
    """Around one `siaga` command: afterwards, push the workstation's copy to the DRC when the
    command used a records directory (or deployed) and something changed. Never raises."""
    store.forget_used()
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException:
        _after(args, console)
        raise
    _after(args, console)


# --- checking ------------------------------------------------------------------------------------

def check(site: Site, site_file: Path) -> dict:
    """How current the copy on each DRC host is against the workstation's files now."""
    entries, _ = m.entries(site, Path(site_file))
    local = m.files_of(entries)
    state = m.read_state(site)
    hosts = mirror_hosts(site)
    answers = remote.parallel(hosts, lambda h: read_manifest(site, h), 60,
                              lambda h: {"state": "unreachable", "error": f"{h}: no answer within 60 s"})
    out = {}
    for host, a in answers.items():
        row: dict = {"state": a["state"], "error": a.get("error")}
        if a["state"] == "present":
            man = a["manifest"]
            diff = m.compare(local, man.get("files", {}))
            # Written by this workstation (not only of its lineage: a restored one shares that).
            mine = man.get("instance") == state.get("instance")
            row.update({"pushed_at": man.get("pushed_at"), "pushed_by": man.get("pushed_by"), "seq": man.get("seq"),
                        "files": len(man.get("files", {})), "ours": mine, "lineage": man.get("lineage"), **diff,
                        "current": mine and not diff["missing"] and not diff["differ"] and not diff["extra"]})
        else:
            row["current"] = False
        out[host] = row
    ok = bool(hosts) and all(r["current"] for r in out.values())
    return {"ok": ok, "hosts": out, "local_files": len(local), "behind_since": state.get("behind_since"),
            "last_push": state.get("pushed_at"), "lineage": state.get("lineage")}


# --- reading it back (a restore) -------------------------------------------------------------------

def fetch_with(conn, site_name: str) -> tuple[dict, dict[str, bytes], str]:
    """The copy of `site_name` read over an open connection (a restore has no site file yet):
    manifest, files (each checked against it), the manifest's sha256."""
    r = conn.run(remote.program_command(PROGRAM, {"mode": "fetch", "site": site_name}), hide=True, warn=True, in_stream=False,
                 timeout=300)
    a = answer_of(remote.Result(str(conn.host), reachable=True, exited=r.exited, stdout=r.stdout, stderr=r.stderr))
    if not a.get("ok"):
        raise m.MirrorError(f"reading the copy failed: {a.get('error')}")
    if a["state"] == "absent":
        raise m.MirrorError(f"no workstation copy of site '{site_name}' in {ROOT} there")
    data = base64.b64decode(a["data"])
    man, files = m.unpack(data)
    return man, files, sha(m.manifest_bytes(data))
