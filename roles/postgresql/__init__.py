"""postgresql role: Debian's PostgreSQL (the site platform's major) in Debian's layout, ready for streaming replication.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
