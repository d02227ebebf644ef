"""Jinja2 rendering with StrictUndefined. Returns text; never prints and never writes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml


def _to_nice_yaml(value: Any, indent: int = 2) -> str:
    return yaml.safe_dump(value, indent=indent, default_flow_style=False, sort_keys=False, width=1000)


@cache
def _environment(template_dir: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders YAML and shell, never HTML
    )
    env.filters["to_nice_yaml"] = _to_nice_yaml
    return env


def render(template_dir: Path, name: str, **context: Any) -> str:
    """Render template `name` from `template_dir`; an undefined variable raises, it never renders empty."""
    return _environment(str(template_dir)).get_template(name).render(**context)
