"""Where pyinfra stages a file on a host before sudo copies it into place: /tmp, always.

pyinfra uploads as the admin over SFTP to a staging file, then copies it as root. Its default staging
directory is `$TMPDIR` as read under sudo; with libpam-tmpdir (roles/os_hardening, Lynis DEB-0280)
every PAM session, sudo's too, gets a private `$TMPDIR`, root's being `/tmp/user/0` (0700 root),
where the admin's SFTP cannot write: every upload would fail. `/tmp` is writable by the admin
(sticky, so no other user can touch the staged file) and pyinfra removes the file after the copy.
Set for every deploy file siaga's runner loads (drc/hosts/run_deploy.py) and by siaga's own deploy
files themselves (drc.hosts.inventory.this_host_in_site), so plain `pyinfra` runs them too; another
deploy file run with plain `pyinfra` sets `config.TEMP_DIR = "/tmp"` itself. SOP IN-2.
"""

from __future__ import annotations

STAGING_DIR = "/tmp"


def stage_uploads_in_tmp() -> None:
    """In a deploy file: pyinfra's own file operations (files.put, files.template, ...) of this file
    stage in STAGING_DIR (pyinfra's `config.TEMP_DIR`, the default of their `_temp_dir`). Works
    under siaga's runner and plain `pyinfra` alike; pyinfra resets the config after each file."""
    from pyinfra import config

    config.TEMP_DIR = STAGING_DIR


def staging_path(dest: str) -> str:
    """In an operation of siaga's own: the staging file for `dest` (the operation's `_temp_dir` when
    one is given, else STAGING_DIR; never the `$TMPDIR` pyinfra would read under sudo)."""
    from pyinfra import host

    wanted = (host.current_op_global_arguments or {}).get("_temp_dir") or STAGING_DIR
    return host.get_temp_filename(dest, temp_directory=str(wanted))
