"""`pirl-ablate list`: whole docstring summaries, wrapped at any width, and only the parameters a user sets."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from pirl_ablate.commands.listing import registry_table
from pirl_ablate.registry import Registry

_REG = Registry("gadget")


@_REG.register("long_gadget", gin_name="LongGadget")
class LongGadget:
    """A gadget whose summary runs over three source lines of its docstring, so that a listing which kept only the
    first physical line would stop in the middle of this sentence; it ends with the word
    albatross.

    Everything after the blank line is detail that the listing leaves out.
    """

    def __init__(self, width: int = 3, _cache: dict | None = None):
        self.width = width


def plain_table(frame, sweep: str = "lambda"):
    """Table 99: a report entry, called by the code with the results DataFrame."""
    return frame, sweep


def _printed(reg: Registry, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(registry_table("gadgets", reg))
    return console.export_text()


def _cells(text: str, column: int) -> str:
    """The words of one column of a printed rich table, across its wrapped lines."""
    words = []
    for line in text.splitlines():
        parts = re.split(r"[│┃]", line)
        if len(parts) > column + 1:
            words.append(parts[column + 1].strip())
    return " ".join(w for w in words if w)


@pytest.mark.parametrize("width", [50, 80, 200])
def test_the_whole_summary_is_printed_at_any_width_and_nothing_after_it(width):
    text = _printed(_REG, width)
    description = _cells(text, 2)
    summary = ("A gadget whose summary runs over three source lines of its docstring, so that a listing which kept "
               "only the first physical line would stop in the middle of this sentence; it ends with the word "
               "albatross.")
    assert re.sub(r"\s+", "", summary) in re.sub(r"\s+", "", description)  # words may fold, none is lost
    assert "Everything after" not in text and "…" not in text


def test_only_public_parameters_and_no_empty_gin_column():
    gadgets = _printed(_REG, 200)
    assert "width=3" in gadgets and "_cache" not in gadgets

    tables = Registry("table")
    tables.register("plain_table", configurable=False)(plain_table)
    text = _printed(tables, 120)
    assert "gin name" not in text
    assert "sweep='lambda'" in text and "frame" not in text


def test_list_shows_moco_v2_and_the_negative_sources():
    from pirl_ablate.commands.listing import registry

    methods = _printed(registry("methods"), 200)
    assert "moco_v2" in methods and "MoCoV2" in methods and "queue_size=65536" in methods
    negatives = _printed(registry("negatives"), 200)
    for name, gin_name in (("memory_bank", "MemoryBankNegatives"), ("momentum_queue", "MomentumQueue"),
                           ("in_batch", "InBatchNegatives")):
        assert name in negatives and gin_name in negatives
    assert "size=65536" in negatives and "momentum_encoder=False" in negatives
