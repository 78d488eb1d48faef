"""fail2ban role: bans sources that keep failing to log in to sshd or Apache, in nftables.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
