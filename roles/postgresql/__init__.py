"""postgresql role: Debian's PostgreSQL 15 in Debian's layout, ready for streaming replication.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
