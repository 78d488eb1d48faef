"""Append-only records on the workstation (JSON lines) and report rendering (Jinja2 templates)."""
