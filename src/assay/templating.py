"""The Jinja environment of assay's standalone HTML pages (model card, comparison, monitoring report).

Each package keeps its own templates folder; every page also sees the shared pieces in
``assay/templates`` (the report stylesheet). Autoescaping is on and an undefined name is an
error, so a page never renders a silently empty value.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

_SHARED = Path(__file__).with_name("templates")


@lru_cache(maxsize=8)
def environment(templates: Path) -> jinja2.Environment:
    """The environment for the templates in ``templates`` (one per folder, made once)."""
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(templates), jinja2.FileSystemLoader(_SHARED)]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
