"""Where the uploads sync keeps things: its templates, its files and units on the hosts, its key's
name on the admin workstation. Said once for the role's deploy and secret custody."""

from pathlib import Path

from roles.managed_files import MANAGED_HEADER

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/uploads_sync")
CONF_DIR = "/etc/siaga/uploads-sync"
PRIVATE_KEY = f"{CONF_DIR}/id_ed25519"
KNOWN_HOSTS = f"{CONF_DIR}/known_hosts"
LSYNCD_CONF = f"{CONF_DIR}/lsyncd.conf.lua"
RESYNC_SCRIPT = "/usr/local/sbin/siaga-uploads-resync"
STATE_DIR_NAME = "siaga-uploads-sync"
STATE_DIR = f"/var/lib/{STATE_DIR_NAME}"
SYNC_UNIT = "siaga-uploads-sync.service"
RESYNC_UNIT = "siaga-uploads-resync.service"
RESYNC_TIMER = "siaga-uploads-resync.timer"
KEY_FILE = "uploads-sync.id_ed25519"  # on the admin workstation, in the secrets dir
