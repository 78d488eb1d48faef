"""replication role: the DRC as a hot standby of the primary (streaming, one slot per standby).

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
