"""logbook role: what the remote-repair logbook reads on each host (SOP RA-5, RA-6).

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
