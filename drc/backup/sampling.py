"""Which backup and which snapshot a restore test takes: at random (SOP BK-4 "random sampling"),
or the one the operator names."""

from __future__ import annotations

import random


def pick_backup(backups: list[dict], label: str | None, rng: random.Random) -> dict | None:
    """A pgBackRest backup (items of `pgbackrest info` 'backup', oldest first): 'latest', the one
    labelled `label`, or any of them with equal chance."""
    if not backups:
        return None
    if label == "latest":
        return backups[-1]
    if label:
        return next((x for x in backups if x["label"] == label), None)
    return rng.choice(backups)


def pick_snapshot(snapshots: list[dict], snapshot: str | None, rng: random.Random) -> dict | None:
    """A restic snapshot (oldest first): 'latest', the one whose id starts with `snapshot`, or any."""
    if not snapshots:
        return None
    if snapshot == "latest":
        return snapshots[-1]
    if snapshot:
        return next((s for s in snapshots if s["id"].startswith(snapshot)), None)
    return rng.choice(snapshots)


def sampler(seed: int | None) -> random.Random:
    """Seeded to repeat a sampling; otherwise the OS's randomness (no pattern an attacker could time)."""
    return random.Random(seed) if seed is not None else random.SystemRandom()
