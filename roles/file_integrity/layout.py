"""The role's own directory (templates) and the header of the files it manages: said once for
deploy.py and debsums.py."""

from pathlib import Path

from roles.managed_files import MANAGED_HEADER

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/file_integrity")
