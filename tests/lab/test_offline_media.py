"""Offline media in rotation on the real lab (SOP BK-1, BK-9, EM-3.7), as an operator runs it:
`siaga lab media attach --label ...` plugs one labelled medium (an image per label) into the DRC,
`siaga backup offline` copies and verifies there, `--init-medium` labels a blank medium and never
relabels one holding copies, `--stored` records where a medium is kept, `--list` answers with no
medium attached, the due medium moves along the rotation, retention on a medium keeps its last
verified copy while later copies fail, and a copy on another medium is readable on its own.
Every wait is a command that returns when done (Type=oneshot units, the CLI); no fixed sleeps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.test_backup import siaga

REPO = Path(__file__).resolve().parents[2]
LOG = "/var/log/siaga/backup.jsonl"
MNT = "/media/siaga-offline"
RESTIC_DATA = "/srv/siaga-backup/restic/data"
PASSWORD = "/etc/siaga/backup/restic-repo1.password"
LABELS = ("OFFLINE-A", "OFFLINE-B", "OFFLINE-C")  # the lab site's rotation (the default)


@pytest.fixture(scope="module")
def backed_up(lab, hosts):
    """A database backup and file snapshots in the repository, so there is something to copy, and
    new blank media A, B, C (a lab kept from an earlier run had them used): labelled as an operator
    labels new media, which also tells siaga their earlier copies are gone."""
    code, out, _ = siaga(lab, "run")
    assert code == 0, out
    lab.media_detach()
    for label in LABELS:
        lab.disk_image(f"medium-{label.lower()}").unlink(missing_ok=True)
        attach(lab, label)
        code, listed, _ = siaga(lab, "offline", "--list")
        assert not [c for c in listed["copies"] if c["medium"] == label], listed["copies"]
    lab.media_detach()
    return out


def attach(lab, label: str) -> None:
    lab.media_attach("drc", label=label)
    code, out, _ = siaga(lab, "offline", "--init-medium", label)  # a blank medium: labelled; a labelled one: unchanged
    assert code == 0 and out["medium"] == label, out


def on_medium(d) -> list[str]:
    return sorted(d.check_output(f"ls {MNT}/siaga-offline").split())


def test_offline_copy_only_while_the_media_is_attached_verified_and_listed(lab, hosts, backed_up):
    d = hosts["drc"]
    lab.media_detach()
    code, out, _ = siaga(lab, "offline")
    assert code == 1 and "not attached" in out["error"] and out["record"]["result"] == "failure"
    try:
        attach(lab, "OFFLINE-A")
        code, first, took1 = siaga(lab, "offline")
        assert code == 0 and first["copy"]["verified"] and first["medium"] == "OFFLINE-A", first
        c = first["copy"]
        assert c["pgbackrest"]["ok"] and c["pgbackrest"]["backups"] and c["restic"]["ok"] and c["restic"]["snapshots"]
        # The weekly timer's job, started as systemd starts it: a second copy, hard-linked to the first
        # (the same second as the first on a small repository: copy_name() takes the next one).
        before = len(d.file(LOG).content_string.splitlines())
        t0 = time.monotonic()
        d.check_output("systemctl start siaga-backup-offline.service")  # Type=oneshot: returns when done
        took2 = time.monotonic() - t0
        timer_rec = json.loads(d.file(LOG).content_string.splitlines()[before])
        assert (timer_rec["set"], timer_rec["trigger"], timer_rec["result"]) == ("offline", "timer", "success"), timer_rec
        assert timer_rec["details"]["medium"] == "OFFLINE-A"
        code, listed, _ = siaga(lab, "offline", "--list")
        second = next(x for x in listed["copies"] if x["name"] == timer_rec["details"]["copy"])
        assert code == 0 and listed["source"] == "media" and second["linked"] > 0 and second["previous"] == c["name"]
        names = [x["name"] for x in listed["copies"] if x["medium"] == "OFFLINE-A"]
        assert names == sorted(names) and names[-2:] == [c["name"], second["name"]]
    finally:
        lab.media_detach()
    assert not d.run(f"findmnt {MNT}").succeeded  # gone from the server
    code, listed, _ = siaga(lab, "offline", "--list")
    assert code == 0 and listed["source"].startswith("workstation records")
    assert [x["name"] for x in listed["copies"] if x["medium"] == "OFFLINE-A"][-2:] == names[-2:]
    assert listed["last_verified"] == names[-1]
    print(f"offline copy: first {took1:.1f} s ({c['copied']} files, {c['size_bytes']} B on media), "
          f"second by the timer {took2:.1f} s ({second['linked']} files hard-linked); copies on OFFLINE-A: {names}")


def test_media_rotate_each_holds_its_own_copies_and_says_where_it_is_kept(lab, hosts, backed_up):
    d = hosts["drc"]
    # An unknown label is refused before any host is touched.
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "offline", "--init-medium", "OFFLINE-Z", str(lab.site_file)],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "not in the rotation" in proc.stderr and "Fix:" in proc.stderr
    try:
        attach(lab, "OFFLINE-A")
        code, a, _ = siaga(lab, "offline")
        assert code == 0 and a["copy"]["verified"], a
        lab.media_detach()
        code, out, _ = siaga(lab, "offline", "--stored", "OFFLINE-A", "--location", "lemari besi kantor")
        assert code == 0
        code, listed, _ = siaga(lab, "offline", "--list")
        # A holds the newest verified copy: the next in the rotation is due (B never got one in this lab, or longer ago).
        assert listed["due"] == "OFFLINE-B", (listed["due"], listed["media"])
        attach(lab, "OFFLINE-B")
        code, b, _ = siaga(lab, "offline")
        assert code == 0 and b["copy"]["verified"] and b["medium"] == "OFFLINE-B" and not b["warning"], b
        # B's copies are its own: B's first copy is a whole copy, its later ones link only into B.
        b_copies = [c for c in b["copies"] if c["medium"] == "OFFLINE-B"]
        assert b_copies[0]["previous"] is None and b_copies[0]["linked"] == 0
        assert all(c["previous"] in {x["name"] for x in b_copies} for c in b_copies[1:])
        assert json.loads(d.file(f"{MNT}/siaga-offline/medium.json").content_string)["label"] == "OFFLINE-B"
        # A medium holding copies is never relabelled.
        code, out, _ = siaga(lab, "offline", "--init-medium", "OFFLINE-C")
        assert code == 1 and "refused to relabel" in out["error"], out
        code, listed, _ = siaga(lab, "offline", "--list")
        assert listed["due"] == "OFFLINE-C", listed["due"]  # never used in the lab
        lab.media_detach()
        code, out, _ = siaga(lab, "offline", "--stored", "OFFLINE-B", "--location", "brankas kantor bupati")
        # A copy onto A now is made, and says A is not the one due, in the output and the record.
        attach(lab, "OFFLINE-A")
        code, a2, _ = siaga(lab, "offline")
        assert code == 0 and a2["copy"]["verified"] and "not the one due in the rotation (OFFLINE-C)" in (a2["warning"] or ""), a2
        assert a2["record"]["details"]["warning"] == a2["warning"] and a2["copy"]["warning"] == a2["warning"]
        lab.media_detach()
        # The copy on B is readable on its own, with A detached: pgBackRest and restic read it there.
        lab.media_attach("drc", label="OFFLINE-B")
        assert not d.run(f"test -e {MNT}/siaga-offline/{a['copy']['name']}").succeeded  # A's copies are not here
        copy_dir = f"{MNT}/siaga-offline/{b['copy']['name']}"
        verify = d.run(f"runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo --stanza=spse "
                       f"--repo1-path={copy_dir}/pgbackrest --log-level-console=info verify")
        assert verify.rc == 0 and "completed successfully" in verify.stdout, verify.stdout[-2000:] + verify.stderr[-2000:]
        # restic runs on the data host (the DRC has no restic): B is plugged in there, on its own.
        lab.media_detach()
        lab.media_attach("primary", label="OFFLINE-B")
        p, restic = hosts["primary"], f"restic -r {copy_dir}/restic --password-file {PASSWORD} --no-cache --no-lock"
        check = p.run(f"{restic} check --read-data")
        assert check.rc == 0 and "no errors were found" in check.stdout, check.stdout[-2000:] + check.stderr[-2000:]
        snaps = json.loads(p.check_output(f"{restic} snapshots --json"))
        assert snaps and {s["short_id"] for s in snaps} >= set(b["copy"]["restic"]["snapshots"])
    finally:
        lab.media_detach()
    code, listed, _ = siaga(lab, "offline", "--list")
    rows = {m["label"]: m for m in listed["media"]}
    assert code == 0 and listed["source"].startswith("workstation records")
    assert rows["OFFLINE-B"]["location"] == "brankas kantor bupati" and rows["OFFLINE-B"]["last_verified"] == b["copy"]["name"]
    assert rows["OFFLINE-A"]["last_verified"] and rows["OFFLINE-A"]["location"] in ("lemari besi kantor", "server drc (belum dicatat disimpan)")
    newest = max(m["last_verified"] for m in listed["media"] if m["last_verified"])
    assert listed["last_clean"]["verified"] and listed["last_clean"]["name"] == newest == a2["copy"]["name"]
    print(f"media: {[(m['label'], m['last_verified'], m['location']) for m in listed['media']]}; due {listed['due']}; "
          f"B verified on its own: pgbackrest verify + restic check --read-data ({len(snaps)} snapshots)")


def test_retention_on_a_medium_keeps_its_last_verified_copy_while_later_copies_fail(lab, hosts, backed_up):
    d = hosts["drc"]
    keep = 4  # backup.offline.retention_full in the lab (the default)
    victim = d.check_output(f"find {RESTIC_DATA} -type f -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2")
    try:
        attach(lab, "OFFLINE-A")
        code, good, _ = siaga(lab, "offline")
        assert code == 0 and good["copy"]["verified"], good
        last_ok = good["copy"]["name"]
        d.check_output(f"cp -a {victim} /root/siaga-test-victim")
        failed = []
        try:
            d.check_output(f"printf 'siaga-corruption' | dd of={victim} bs=1 seek=100 conv=notrunc status=none")
            for _ in range(keep + 2):  # more failed copies than `keep`: the old rule deleted every verified copy here
                code, bad, _ = siaga(lab, "offline")
                assert code == 1 and not bad["copy"]["verified"] and bad["record"]["result"] == "failure", bad
                assert bad["copy"]["restic"]["bad"] and bad["copy"]["previous"] == last_ok  # linked to the verified copy only
                failed.append(bad["copy"]["name"])
        finally:
            d.check_output(f"cp -a /root/siaga-test-victim {victim} && rm -f /root/siaga-test-victim")
        here = on_medium(d)
        assert last_ok in here, here
        assert [n for n in failed if n in here] == failed[-keep:]  # failed copies kept: the newest `keep`, for the analysis
        code, listed, _ = siaga(lab, "offline", "--list")
        row = next(m for m in listed["media"] if m["label"] == "OFFLINE-A")
        assert row["last_verified"] == last_ok and listed["last_clean"]["name"] == last_ok
        # The repository mended: the next copy verifies and the failed ones older than it go.
        code, mended, _ = siaga(lab, "offline")
        assert code == 0 and mended["copy"]["verified"] and mended["copy"]["previous"] == last_ok, mended
        here = on_medium(d)
        assert not set(failed) & set(here) and last_ok in here and mended["copy"]["name"] in here
    finally:
        lab.media_detach()
    print(f"OFFLINE-A after {len(failed)} failed copies: kept {last_ok} (verified) and the newest {keep} failed; "
          f"then {mended['copy']['name']} verified, failed ones removed: {here}")
