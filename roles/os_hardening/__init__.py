"""os_hardening role: kernel and sysctl hardening, auditd rules for privileged commands, the
console login banner (controls after devsec.hardening os_hardening).

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
