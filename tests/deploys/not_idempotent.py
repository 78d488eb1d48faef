"""A deploy that is not idempotent on purpose, for the idempotence check's own test:

    SIAGA_TEST_LAB=... pytest tests/lab/test_deploy_results.py -k idempotence

The first operation writes the current time to a file, so every run changes it; the second writes
the same content every run, so only its first run changes anything. A re-run must be reported as
changing the first one only (drc.hosts.deploy.no_change_problem names it).
"""

import time
from io import StringIO

from pyinfra.operations import files

files.put(
    name="Timestamp written on every run (not idempotent on purpose)",
    src=StringIO(f"{time.time_ns()}\n"),
    dest="/var/tmp/siaga-not-idempotent",
    mode="644",
)
files.put(
    name="Same content on every run (idempotent)",
    src=StringIO("siaga idempotence check\n"),
    dest="/var/tmp/siaga-idempotent",
    mode="644",
)
