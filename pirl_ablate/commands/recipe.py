"""`pirl-ablate recipe CONFIG.gin [--strict]`: a config's recipe card (`pirl_ablate.recipe_card`), or one per run of
a sweep file."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import gin

from pirl_ablate import config
from pirl_ablate.console import out
from pirl_ablate.recipe_card import card_text, recipe_card, show_value, sweep_cards


def run(args: argparse.Namespace) -> int:
    """Print the card of CONFIG.gin; for a sweep file, the card of each variant's first run and one line per run.
    Under --strict exit 1 when a row (pre-training or evaluation) differs from the paper.
    """
    files = [args.config, *args.gin]
    if _is_sweep(files, args.bind):
        cards = sweep_cards(args.config, args.bind, args.gin)
        shown: set = set()
        for run, card in cards:
            if run.variant not in shown:
                shown.add(run.variant)
                _print(card_text(card, f"{args.config}: {run.variant or 'every run'} (first run, {run.run_id})"))
        for run, card in cards:
            differences = card.differences()
            verdict = ("DIFFERS: " + ", ".join(f"{ln.row.key} = {show_value(ln.ours)}" for ln in differences)
                       if differences else "no difference from the paper")
            _print(f"run {run.run_id} {run.variant or ''} {run.bindings or ''}: {verdict}")
        failed = any(card.differences() for _, card in cards)
        deviations = cards[0][1].deviations() if cards else []
    else:
        card = recipe_card(files, args.bind)
        _print(card_text(card, str(args.config)))
        failed, deviations = bool(card.differences()), card.deviations()
        if failed:
            _print(f"{args.config}: {len(card.differences())} row(s) differ from the paper: "
                   + ", ".join(f"{ln.row.key} = {show_value(ln.ours)}" for ln in card.differences()))
    for ln in deviations:
        _print(f"named deviation: {ln.row.deviation} ({ln.row.key} = {show_value(ln.ours)}); back to VISSL's: "
               f"--bind \"{ln.row.switch}\"")
    return 1 if args.strict and failed else 0


def _is_sweep(files: Sequence[str | Path], bindings: Sequence[str]) -> bool:
    text = config.parse(files, bindings, finalize=False)
    gin.clear_config()
    return any(k.startswith("sweep.") for k in config.bindings_of(text))


def _print(text: str) -> None:
    out.print(text, markup=False, highlight=False, soft_wrap=True)
