"""Rendering role templates: undefined variables are errors, never blanks."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined


# The first line of every file a role writes.
MANAGED_HEADER = "Managed by siaga ({role}); local changes are overwritten by the next deploy."


def sha1_of(content: str) -> str:
    return hashlib.sha1(content.encode()).hexdigest()


@cache
def _environment(templates: Path) -> Environment:
    """One environment per role: a template is compiled once per process, not once per host
    (jinja2 checks the file's mtime and recompiles it when it changed)."""
    return Environment(
        loader=FileSystemLoader(templates),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(role_dir: str | Path, template: str, **context) -> str:
    """Render `templates/<template>` of a role."""
    return _environment(Path(role_dir) / "templates").get_template(template).render(**context)
