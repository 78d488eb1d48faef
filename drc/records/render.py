"""Reports: Jinja2 templates (drc/records/templates) rendered to standalone HTML, in Indonesian with
the SOP forms' field names."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))


def render_report(template: str, **context) -> str:
    return _env().get_template(template).render(**context)
