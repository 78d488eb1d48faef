"""firewall role: nftables, inbound default deny, in its own table `inet siaga`.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
