"""The offline media on the workstation (SOP BK-1: media in rotation; BK-9: kept in a safe place;
EM-3.7: the last backup not hit by the virus): pure functions over the records that
`siaga backup offline` keeps, so the answers hold while every medium is in its safe place and no
server answers.

Records in `<records_dir>/`:
- `offline-copies.jsonl`: the copies' manifests as read from a medium (id `offline-<label>-<name>`;
  before media had labels: `offline-<name>`), and copies the repository host remembers of media
  not attached (id `seen-<label>-<name>`, only medium, name, time and result);
- `offline-removed.jsonl`: copies a medium no longer holds (removed by its retention);
- `offline-media.jsonl`: where each medium is kept, recorded when it is unplugged (`--stored`).

Which medium is due is the role's own rule (`rotation()` in roles/backup/files/siaga-offline-copy,
also used on the repository host for the timer's copy), loaded from that file: one rule, one place.
"""

from __future__ import annotations

import datetime as dt
import importlib.machinery
import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

import roles.backup

COPY_PROGRAM = Path(roles.backup.__file__).parent / "files" / "siaga-offline-copy"
COPIES = "offline-copies.jsonl"
REMOVED = "offline-removed.jsonl"
STORED = "offline-media.jsonl"


@cache
def program() -> ModuleType:
    """siaga-offline-copy as a module (standard library only; its main part runs only as a program)."""
    loader = importlib.machinery.SourceFileLoader("siaga_offline_copy", str(COPY_PROGRAM))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def parse_time(text: str) -> dt.datetime:
    """An ISO time (`2026-11-26T03:00+07:00`, `2026-11-26 03:00`); without an offset: local time."""
    t = dt.datetime.fromisoformat(text.strip())
    return t if t.tzinfo else t.astimezone()


def copy_time(copy: dict) -> dt.datetime:
    return program().when(copy)


def last_clean_copy(copies: list[dict], before: dt.datetime | None = None) -> dict | None:
    """EM-3.7 "the last clean backup": of the copies on every medium, the newest one that was
    verified on its medium, made before `before` (the time of infection) when given. None when
    there is none."""
    ok = [c for c in copies if c.get("verified") and c.get("name") and (before is None or copy_time(c) < before)]
    return max(ok, key=copy_time, default=None)


def merge(copies: list[dict], seen: list[dict], removed: list[dict]) -> list[dict]:
    """The copies still on their media, oldest first: a manifest read from the medium wins over
    what the host remembers; a copy made before labels counts once, under its medium's label once
    known; removed copies are gone."""
    by_key: dict[tuple, dict] = {}
    for c in [*seen, *copies]:  # manifests last: they win
        if c.get("name"):
            by_key[(c.get("medium"), c["name"])] = c
    labelled = {name for (medium, name) in by_key if medium}
    for medium, name in list(by_key):
        if medium is None and name in labelled:
            del by_key[(medium, name)]
    for r in removed:
        for key in [k for k in by_key if k[1] == r.get("name") and (r.get("medium") is None or k[0] == r.get("medium"))]:
            del by_key[key]
    return sorted(by_key.values(), key=lambda c: (copy_time(c), c.get("medium") or ""))


def where_kept(label: str, stored: list[dict], copies: list[dict]) -> dict:
    """Where a medium is: its last `--stored` record, unless a copy was made on it since (then it
    was plugged into the server after being put away, and nobody recorded it put away again)."""
    st = max((s for s in stored if s.get("medium") == label), key=lambda s: parse_time(s["since"]), default=None)
    newest = max((c for c in copies if c.get("medium") == label), key=copy_time, default=None)
    if newest and (st is None or copy_time(newest) > parse_time(st["since"])):
        return {"location": f"server {newest.get('host') or '?'} (belum dicatat disimpan)", "since": newest.get("copied_at"),
                "stored": False}
    if st:
        return {"location": st["location"], "since": st["since"], "stored": True, "by": st.get("by")}
    return {"location": None, "since": None, "stored": False}


def media_status(labels: list[str], period_s: float, copies: list[dict], stored: list[dict], now: dt.datetime) -> dict:
    """Each medium of the rotation (and any other label copies carry): copies, last verified
    copy, where it is kept and since when, and which medium is due."""
    rot = program().rotation(copies, labels, period_s, now)
    others = sorted({c["medium"] for c in copies if c.get("medium") and c["medium"] not in labels})
    rows = []
    for label in [*labels, *others]:
        mine = [c for c in copies if c.get("medium") == label]
        ok = [c for c in mine if c.get("verified")]
        rows.append({"label": label, "in_rotation": label in labels, "copies": len(mine),
                     "last_copy": mine[-1]["name"] if mine else None,
                     "last_verified": ok[-1]["name"] if ok else None,
                     "last_verified_at": ok[-1].get("copied_at") if ok else None,
                     **where_kept(label, stored, mine), "due": label == rot["due"]})
    unlabelled = [c for c in copies if not c.get("medium")]
    return {"media": rows, "due": rot["due"], "due_at": rot["due_at"], "overdue": rot["overdue"], "unlabelled_copies": len(unlabelled)}
