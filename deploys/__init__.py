"""siaga's deploy entry files (site, remote_access, data_tier). pyinfra runs them as files, not as
modules: `pyinfra inventory/<site>.py deploys/site.py`, or `siaga deploy SITE [--only ...]`, which
finds them beside the installed drc package (drc.hosts.deploy.deploys_dir)."""
