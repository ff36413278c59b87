"""Reports: run folders -> one DataFrame (results.py) -> the paper's tables and figures (tables.py) -> rich,
Markdown, CSV, LaTeX and PNG (render.py, figures.py). `pirl-ablate report` is command.py."""

from pirl_ablate.report import fidelity, recipe, tables  # noqa: F401  (register the paper's tables and figures)
