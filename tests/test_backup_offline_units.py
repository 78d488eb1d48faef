"""`siaga backup offline` without a lab: the copy as a backup-log record (also when it failed) and
the list of offline copies kept on the workstation while the media is away (SOP BK-3, BK-9, EM-3.7)."""

from __future__ import annotations

import datetime as dt

from drc import backup_offline
from tests.test_backup_cli_units import site  # noqa: F401  (fixture)

T0 = dt.datetime(2026, 11, 22, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))


def copy(name, verified=True):
    return {"name": name, "copied_at": T0.isoformat(), "verified": verified, "bytes_copied": 10, "size_bytes": 20,
            "pgbackrest": {"ok": verified, "backups": ["L1", "L2"], "output": "" if verified else "checksum invalid: 1"},
            "restic": {"ok": True, "snapshots": ["aa", "bb"], "bad": []}}


def test_a_not_attached_media_is_a_failed_offline_run(site):  # noqa: F811
    rec = backup_offline.copy_record(site, "drc", "budi", {"ok": False, "attached": False,
                                                            "error": "the offline media is not attached"}, T0)
    assert (rec["set"], rec["repository"], rec["result"], rec["kind"]) == ("offline", "offline", "failure", "copy")
    assert "not attached" in rec["error"]


def test_an_unverified_copy_is_a_failure_with_the_reason(site):  # noqa: F811
    rec = backup_offline.copy_record(site, "drc", "budi", {"ok": False, "attached": True, "copy": copy("20261122T140000", False)}, T0)
    assert rec["result"] == "failure" and "checksum invalid" in rec["error"] and rec["details"]["backups"] == ["L1", "L2"]
    good = backup_offline.copy_record(site, "drc", "budi", {"ok": True, "attached": True, "copy": copy("20261122T150000")}, T0)
    assert good["result"] == "success" and good["error"] is None and good["details"]["snapshots"] == 2


def test_the_list_survives_detaching_oldest_first_without_removed_copies(site):  # noqa: F811
    backup_offline.remember(site, {"copies": [copy("20261115T010000"), copy("20261122T010000", False)]})
    backup_offline.remember(site, {"copies": [copy("20261108T010000"), copy("20261129T010000")], "removed": ["20261108T010000"]})
    copies, source = backup_offline.listing(site, {"attached": False})
    assert source.startswith("workstation records")
    assert [c["name"] for c in copies] == ["20261115T010000", "20261122T010000", "20261129T010000"]
    assert [c["verified"] for c in copies] == [True, False, True]
    on_media, source = backup_offline.listing(site, {"attached": True, "copies": [copy("X")]})
    assert source == "media" and on_media[0]["name"] == "X"
