"""backup role: pgBackRest (database, WAL archiving) and restic (files) to a repository at the
other site, offline media, systemd timers, and a runner that records every run. SOP BK-1..BK-9.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
