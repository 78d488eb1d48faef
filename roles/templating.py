"""Rendering role templates: undefined variables are errors, never blanks."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined


def render(role_dir: str | Path, template: str, **context) -> str:
    """Render `templates/<template>` of a role."""
    env = Environment(
        loader=FileSystemLoader(Path(role_dir) / "templates"),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(template).render(**context)
