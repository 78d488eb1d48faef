"""spse_app role: the SPSE application (the lab's stand-in, or a real SPSE) behind Apache.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
