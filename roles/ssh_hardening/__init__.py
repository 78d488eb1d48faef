"""ssh_hardening role: a hardened sshd (controls after devsec.hardening ssh_hardening).

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
