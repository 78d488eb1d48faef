"""Reports: Jinja2 templates (drc/records/templates) rendered to standalone HTML, in Indonesian with
the SOP forms' field names."""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))


def render_report(template: str, **context) -> str:
    return _env().get_template(template).render(**context)


# --- months, as the monthly reports name and select them ----------------------------------------

MONTHS_ID = ["Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
             "November", "Desember"]


def parse_month(value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{4})-(\d{2})", value or "")
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"month {value!r}: expected YYYY-MM")
    return int(m.group(1)), int(m.group(2))


def month_of(rec: dict, tz: dt.tzinfo) -> tuple[int, int] | None:
    """The (year, month) a record's `start` falls in, in the site's timezone."""
    try:
        t = dt.datetime.fromisoformat(rec.get("start") or "")
    except ValueError:
        return None
    t = t.astimezone(tz) if t.tzinfo else t.replace(tzinfo=tz)
    return t.year, t.month


def month_label(ym: tuple[int, int]) -> str:
    return f"{MONTHS_ID[ym[1] - 1]} {ym[0]}"
