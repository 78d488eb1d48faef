"""The restore test's pick is random (SOP BK-4): seeds give different picks, every candidate can be
picked, and naming one ('latest', a label, a snapshot id prefix) takes exactly that one."""

from __future__ import annotations

import random

from drc.backup.sampling import pick_backup, pick_snapshot, sampler

BACKUPS = [{"label": f"20261120-0100{i:02d}F"} for i in range(5)]
SNAPSHOTS = [{"id": f"{i:x}" * 8} for i in range(1, 6)]


def test_different_seeds_pick_different_backups_and_every_one_is_reachable():
    picks = {seed: pick_backup(BACKUPS, None, sampler(seed))["label"] for seed in range(200)}
    assert set(picks.values()) == {b["label"] for b in BACKUPS}
    # No candidate dominates: each is picked between 10 % and 30 % of the time over 200 seeds.
    for b in BACKUPS:
        share = sum(1 for v in picks.values() if v == b["label"]) / len(picks)
        assert 0.10 <= share <= 0.30, (b["label"], share)


def test_the_same_seed_repeats_the_sampling():
    assert pick_backup(BACKUPS, None, sampler(7)) == pick_backup(BACKUPS, None, sampler(7))


def test_without_a_seed_the_os_randomness_is_used():
    assert isinstance(sampler(None), random.SystemRandom)
    assert {pick_snapshot(SNAPSHOTS, None, sampler(None))["id"] for _ in range(300)} == {s["id"] for s in SNAPSHOTS}


def test_named_picks():
    assert pick_backup(BACKUPS, "latest", sampler(1)) == BACKUPS[-1]
    assert pick_backup(BACKUPS, BACKUPS[1]["label"], sampler(1)) == BACKUPS[1]
    assert pick_backup(BACKUPS, "nope", sampler(1)) is None
    assert pick_backup([], None, sampler(1)) is None
    assert pick_snapshot(SNAPSHOTS, "latest", sampler(1)) == SNAPSHOTS[-1]
    assert pick_snapshot(SNAPSHOTS, "33", sampler(1)) == SNAPSHOTS[2]
    assert pick_snapshot([], None, sampler(1)) is None
