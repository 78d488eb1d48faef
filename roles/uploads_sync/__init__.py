"""uploads_sync role: uploaded documents (/home/file/...) copied from the source site to the other
one, continuously (lsyncd -> rsync over SSH) and in full on a systemd timer. SOP EM-3.

`deploy.py` holds the @deploy (imports pyinfra); `defaults.py` the typed settings (importable on
their own, e.g. by the site model); README.md documents every setting.
"""
