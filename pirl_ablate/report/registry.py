"""The table/figure registry keyed to the paper's numbering: `@register_table("table5")`."""

from __future__ import annotations

from pirl_ablate.registry import Registry

TABLES = Registry("table")
register_table = TABLES.register
