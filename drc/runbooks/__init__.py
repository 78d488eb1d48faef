"""Runbooks: switch-over, failover, fail-back and drills as tables of checked, journaled steps
(engine.py), run under a lock held on the hosts (lock.py), with a journal per run (journal.py)."""
