"""siaga's own ClamAV signature database: the EICAR test file, by its MD5 and size.

The lab cannot reach ClamAV's signature mirrors, so its clamd loads only this database (the real
engine, a real signature); production loads it beside the official ones (which know EICAR too), so
clamd starts before freshclam's first download and the lab test's file is found either way.
"""

from __future__ import annotations

import hashlib

DATABASE = "/var/lib/clamav/siaga-selftest.hdb"
SIGNATURE = "Siaga.Selftest.EICAR"

# The EICAR anti-virus test file (eicar.org): harmless, detected by every scanner. Kept in two
# halves so that this source file itself is not one.
EICAR = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*").encode()


def hdb() -> str:
    """The database's one line, ClamAV's hash format: MD5:size:name."""
    return f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{SIGNATURE}\n"
