"""Building blocks shared by the registered tables and figures: method labels, metric selection, pivots of seed
aggregates into blocks, problem runs, and the generic report of a sweep's axes against its metrics."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pirl_ablate.report.model import Block, Cell, Plot, Problem, Reference, Report, Row, Series, aggregate, cell
from pirl_ablate.report.results import operative_values, runs_of
from pirl_ablate.runs import STATUS_DONE

# Variant names as sweep files spell them (any case, separators ignored) -> the paper's row labels.
METHOD_LABELS = {
    "pirl": "PIRL",
    "npid": "NPID",
    "npidpp": "NPID++",
    "jigsaw": "Jigsaw",
    "rotation": "Rotation",
    "random": "random init",
    "randominit": "random init",
    "supervised": "supervised",
    "pirlrotation": "PIRL (Rotation)",
    "pirljigsaw": "PIRL (Jigsaw)",
    "pirlrotationjigsaw": "PIRL (Rotation+Jigsaw)",
    "pirljigsawrotation": "PIRL (Rotation+Jigsaw)",
}
BASELINES = ("random init", "supervised")
RANDOM_INIT = "random init"
BASELINE_SWEEP = "loss_variants"  # the shipped sweep whose variants include random init and supervised


def method_label(variant: Any, default: str) -> str:
    """The paper's name for a run's variant ("npid++", "NPID_PP" -> "NPID++"); `default` when it has none."""
    if variant is None or (isinstance(variant, float) and math.isnan(variant)):
        return default
    key = re.sub(r"[^a-z0-9]", "", str(variant).lower().replace("++", "pp"))
    return METHOD_LABELS.get(key, str(variant))


def with_methods(frame: pd.DataFrame, default: str) -> pd.DataFrame:
    """`frame` plus a "method" column (see `method_label`)."""
    labels = {v: method_label(v, default) for v in frame["variant"].dropna().unique()}
    method = frame["variant"].map(labels).fillna(default) if labels else pd.Series(default, index=frame.index)
    return frame.assign(method=method.astype(object))


def kind_of(method: str) -> str:
    return "baseline" if method in BASELINES else "method"


def ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """`preferred` first (in its order), then the rest: numerically if they are all numbers, else by text."""
    values = list(dict.fromkeys(v for v in values if not _missing(v)))
    first = [p for p in dict.fromkeys(preferred) if p in values]
    rest = [v for v in values if v not in first]
    if all(isinstance(v, numbers.Real) for v in rest):
        rest.sort()
    else:
        rest.sort(key=_natural)
    return first + rest


def _natural(v: Any) -> list[Any]:
    """Sort key that orders "2%" < "10%" and "res2" < "res10"."""
    return [(0, float(t), "") if t.replace(".", "", 1).isdigit() else (1, 0.0, t)
            for t in re.split(r"(\d+(?:\.\d+)?)", str(v)) if t]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_value(v: Any) -> str:
    """A binding value as a label: 0.5, 4096, 'nce' (integral floats without '.0')."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# -------------------------------------------------------------------------------------------------- selection
def select(frame: pd.DataFrame, protocol: str, metric: str, group: str | None = None) -> pd.DataFrame:
    """Done runs' rows of one protocol and metric (and group)."""
    mask = (frame["status"] == STATUS_DONE) & (frame["protocol"] == protocol) & (frame["metric"] == metric)
    if group is not None:
        mask &= frame["group"] == group
    return frame[mask]


PROBES = (("linear", "top1"), ("knn", "top1"))


def pick_probe(frame: pd.DataFrame, probes: Sequence[tuple[str, str]] = PROBES) -> tuple[pd.DataFrame, str]:
    """The rows a figure plots: the first (protocol, metric) of `probes` any run has (default linear top-1, else
    kNN top-1), on res5 if present; and a y-axis label."""
    for protocol, metric in probes:
        rows = select(frame, protocol, metric)
        if rows.empty:
            continue
        groups = ordered(rows["group"].unique(), preferred=("res5",))
        group = groups[0]
        return rows[rows["group"] == group], f"{protocol} {metric.replace('top1', 'top-1')} ({group})"
    return frame.iloc[0:0], f"{probes[0][0]} {probes[0][1].replace('top1', 'top-1')} (res5)"


def find_axis(frame: pd.DataFrame, hints: Sequence[str]) -> str | None:
    """The swept binding whose name contains one of `hints` (e.g. "lambda"); else the one with most values."""
    present = [b for b in frame.attrs.get("bindings", []) if b in frame and frame[b].notna().any()]
    for hint in hints:
        for b in present:
            if hint in b.lower():
                return b
    if not present:
        return None
    return max(present, key=lambda b: frame[b].nunique())


# ------------------------------------------------------------------------------------------------------ pivots
def pivot_rows(rows: pd.DataFrame, row_key: str, col_key: str, row_order: Sequence[Any], col_order: Sequence[Any],
               row_label=str, kind=kind_of) -> list[Row]:
    """Rows of seed aggregates: one Row per `row_key` value, one Cell per `col_key` value."""
    agg = aggregate(rows, [row_key, col_key])
    cells: dict[Any, dict[str, Cell]] = {}
    for r, c, mean, std, n in agg[[row_key, col_key, "mean", "std", "n"]].itertuples(index=False):
        if n:
            cells.setdefault(r, {})[str(c)] = cell(mean, std, n)
    return [Row(label=row_label(r), cells=cells[r], kind=kind(r)) for r in row_order if r in cells]


def paper_block(title: str, columns: Sequence[str], numbers: dict[str, Sequence[float | None]]) -> Block:
    rows = [Row(label=name, kind="paper",
                cells={c: Cell(float(v)) for c, v in zip(columns, values) if v is not None})
            for name, values in numbers.items()]
    return Block(title=title, columns=list(columns), rows=rows)


def delta_row(block: Block, minuend: str, subtrahend: str) -> Row | None:
    """`minuend - subtrahend` per column (a difference of means; no std), or None if either row is absent."""
    by_label = {r.label: r for r in block.rows}
    if minuend not in by_label or subtrahend not in by_label:
        return None
    a, b = by_label[minuend].cells, by_label[subtrahend].cells
    return Row(label=f"Δ {minuend} − {subtrahend}", kind="delta",
               cells={c: Cell(a[c].mean - b[c].mean) for c in block.columns if c in a and c in b})


def problems(sweep_frame: pd.DataFrame, used: set[str], need: str) -> list[Problem]:
    """Every run of the sweep that contributed nothing, with its reason (`need` names the evaluation wanted)."""
    out = []
    for run_id, status, reason in runs_of(sweep_frame)[["run_id", "status", "reason"]].itertuples(index=False):
        if run_id in used:
            continue
        if status == STATUS_DONE:
            reason = f"done, but has no {need} evaluation"
        out.append(Problem(run_id=str(run_id), status=str(status), reason=str(reason or "")))
    return out


def random_init_rows(frame: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Done random-init runs (the honesty baseline shown beside smoke-scale results): the sweep's own (a variant or
    a `sweep.baselines` entry) when it has them, else those of any other sweep."""
    done = frame[(frame["method"] == RANDOM_INIT) & (frame["status"] == STATUS_DONE)]
    own = done[done["sweep"] == sweep]
    return own if not own.empty else done


def random_init_note() -> str:
    return ("no random-init baseline found: smoke-scale numbers mean little without it; run "
            f"`{sweep_command(BASELINE_SWEEP)}` (its random-init variant) to get one")


def sweep_command(sweep: str) -> str:
    """The command that produces a shipped sweep's results."""
    return f"pirl-ablate sweep sweeps/{sweep}.gin"


# ------------------------------------------------------------------------------------------------- captions
CAPTION_KEYS = ("train.dataset", "train.epochs", "train.image_size", "Backbone.arch", "Backbone.width_multiplier")
PAPER_ARCH, PAPER_MIN_EPOCHS = "resnet50", 400  # paper Section 4: ResNet-50, 800 epochs (ablations 400)


def caption(rows: pd.DataFrame, counts: Iterable[int]) -> str:
    """What the plotted runs are, from their operative configs: scale, pre-training dataset (and images), image
    size, backbone, epochs, evaluation dataset and seeds, e.g. "ours: smoke scale · pre-trained on fashion_mnist
    (3,000 images, 32 px) · resnet18 x0.5 · 3 epochs · evaluated on fashion_mnist · seed 0 (n = 1 per point: no
    error bars)"."""
    counts = set(counts)
    runs = rows.drop_duplicates("run_id")
    configs = [_run_config(path) for path in runs["path"].dropna()]
    values = {k: sorted({str(c[k]) for c in configs if k in c}) for k in (*CAPTION_KEYS, "subset")}
    one = {k: ", ".join(v) for k, v in values.items()}
    paper_scale = values["Backbone.arch"] == [PAPER_ARCH] and all(
        int(e) >= PAPER_MIN_EPOCHS for e in values["train.epochs"] if e.isdigit()) and values["train.epochs"]
    parts = ["ours: " + ("paper scale" if paper_scale else "smoke scale")]
    if one["train.dataset"]:
        size = [f"{int(n):,} images" for n in values["subset"] if n.isdigit()]
        size += [f"{one['train.image_size']} px"] if one["train.image_size"] else []
        parts.append(f"pre-trained on {one['train.dataset']}" + (f" ({', '.join(size)})" if size else ""))
    if one["Backbone.arch"]:
        widths = [w for w in values["Backbone.width_multiplier"] if w not in ("1", "1.0")]
        parts.append(one["Backbone.arch"] + "".join(f" x{w}" for w in widths))
    if one["train.epochs"]:
        parts.append(f"{one['train.epochs']} epochs")
    parts.append(f"evaluated on {', '.join(sorted(map(str, rows['dataset'].dropna().unique())))}")
    seeds = sorted({int(s) for s in runs["seed"].dropna()})
    n_text = " or ".join(str(n) for n in sorted(counts)) or "0"
    parts.append(f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))} (n = {n_text} per point"
                 + (", error bars: std over seeds)" if max(counts, default=1) > 1 else ": no error bars)"))
    return " · ".join(parts)


def _run_config(path: str) -> dict[str, Any]:
    """The caption's bindings from a run's config.gin; `subset` is the training split's `<dataset>.subset`."""
    config = Path(path) / "config.gin"
    found = {k.removeprefix("config:"): v for k, v in operative_values(config, CAPTION_KEYS).items()}
    dataset = found.get("train.dataset")
    if dataset:
        subset = operative_values(config, (f"train/{dataset}.subset", f"{dataset}.subset"))
        value = subset.get(f"config:train/{dataset}.subset", subset.get(f"config:{dataset}.subset"))
        if value is not None:
            found["subset"] = value
    return found


# --------------------------------------------------------------------------------------------- line figures
def line_figure(report: Report, sweep_frame: pd.DataFrame, baseline: pd.DataFrame, axis: str | None,
                xlabel: str, logx: bool = False, probes: Sequence[tuple[str, str]] = PROBES,
                positive_only: bool = False) -> set[str]:
    """Add to `report` one panel per metric of `probes` the runs have (`pick_probe`: linear top-1, the paper's
    metric, then kNN top-1), each against `axis` with one series per method (and dataset), random init as a
    baseline and a verdict (`separation`), and each panel's numbers as a block (rows = axis values, columns =
    series). The first panel is `report.plot`, the others its `panels`. `positive_only`: the verdicts judge the
    points at x > 0 only (Figure 6: lambda > 0, where the transformed term is trained). Returns the ids of the runs
    plotted."""
    plots, used = [], set()
    for probe in probes:
        rows, ylabel = pick_probe(sweep_frame, (probe,))
        if axis is None or rows.empty or rows[axis].notna().sum() == 0:
            continue
        block, plot = _line_panel(rows[rows[axis].notna()], ylabel, baseline, axis, xlabel, logx, positive_only)
        report.blocks.append(block)
        plots.append(plot)
        used |= set(rows.loc[rows[axis].notna(), "run_id"])
    if plots:
        report.plot = plots[0]
        report.plot.panels = plots[1:]
        report.notes += [p.verdict for p in plots if p.verdict]
    return used


def _line_panel(rows: pd.DataFrame, ylabel: str, baseline: pd.DataFrame, axis: str, xlabel: str,
                logx: bool, positive_only: bool) -> tuple[Block, Plot]:
    multi = rows["dataset"].nunique() > 1
    rows = rows.assign(series=[f"{m} · {d}" if multi else m for m, d in zip(rows["method"], rows["dataset"])])
    series_order = ordered(rows["series"].unique())
    x_order = ordered(rows[axis].unique())
    block = Block(title=f"{ylabel} vs {xlabel}", columns=[str(s) for s in series_order],
                  rows=pivot_rows(rows, axis, "series", x_order, series_order, row_label=fmt_value,
                                  kind=lambda _: "method"),
                  row_header=xlabel)
    plot = Plot(kind="line", xlabel=xlabel, ylabel=ylabel, series=_series(rows, "series", axis, series_order, x_order),
                logx=logx)
    _add_baseline(block, plot, baseline, rows, multi)
    plot.caption = caption(rows, {n for s in plot.series for n in s.n})
    plot.verdict = separation(plot, positive_only)
    block.mark_best()
    return block, plot


def _series(rows: pd.DataFrame, key: str, axis: str, order: Sequence[Any], x_order: Sequence[Any]) -> list[Series]:
    """One Series (mean, std, n over seeds at each x) per value of `key`, points in `x_order`."""
    agg = aggregate(rows, [key, axis])
    out = []
    for s in order:
        part = agg[agg[key] == s].set_index(axis).reindex([x for x in x_order if x in set(agg[axis])])
        part = part[part["n"] > 0]
        out.append(Series(label=str(s), x=list(part.index), y=list(part["mean"]),
                          std=[float(v) for v in part["std"]], n=[int(v) for v in part["n"]]))
    return out


def separation(plot: Plot, positive_only: bool = False) -> str:
    """Whether the plotted metric separates the runs from random init at this budget, derived from the points (those
    at x > 0 with `positive_only`): a point is above (below) when its mean exceeds (falls short of) the baseline's
    by more than the seeds' spread, its std plus the baseline's (their error bars do not overlap). "" without
    exactly one baseline; at n = 1 (no spread to compare with) no separation is claimed."""
    if len(plot.baselines) != 1:
        return ""
    ref = plot.baselines[0]
    points = [(y, sd) for s in plot.series for x, y, sd in zip(s.x, s.y, s.std)
              if not positive_only or (isinstance(x, numbers.Number) and x > 0)]
    if not points:
        return ""
    if all(math.isnan(sd) for _, sd in points) or ref.n < 2:
        return f"{plot.ylabel}: n = 1, no seeds' spread to tell {ref.label} apart from"
    ref_sd = 0.0 if math.isnan(ref.std) else ref.std
    gaps = [(y - ref.mean, (0.0 if math.isnan(sd) else sd) + ref_sd) for y, sd in points]
    above, below = sum(g > spread for g, spread in gaps), sum(-g > spread for g, spread in gaps)
    what = (f"{len(points)} points" if len(points) > 1 else "the point") + (
        f" at {plot.xlabel} > 0" if positive_only else "")
    if above == len(points):
        return f"{plot.ylabel} separates: every one of {what} above {ref.label} by more than the seeds' spread"
    if below == len(points):
        return f"{plot.ylabel} separates, the wrong way: every one of {what} below {ref.label} by more than the " \
               "seeds' spread"
    return (f"{plot.ylabel} does not separate: of {what}, {above} above {ref.label} and {below} below by more than "
            "the seeds' spread")


def separation_per_x(plot: Plot) -> str:
    """The verdict of a figure that plots random init as a series (Figure 5: one value per layer): each other
    series against the random-init series of the same dataset, point by point at the same x, with `separation`'s
    rule (above or below by more than the two stds). "" without a random-init series."""
    refs = {s.label.removeprefix(RANDOM_INIT): s for s in plot.series if s.label.startswith(RANDOM_INIT)}
    parts = []
    for s in plot.series:
        suffix = s.label[s.label.find(" · "):] if " · " in s.label else ""
        ref = refs.get(suffix)
        if ref is None or s is ref:
            continue
        base = {x: (y, sd) for x, y, sd in zip(ref.x, ref.y, ref.std)}
        pairs = [(y - base[x][0], _sd(sd) + _sd(base[x][1])) for x, y, sd in zip(s.x, s.y, s.std) if x in base]
        if not pairs:
            continue
        above, below = sum(g > spread for g, spread in pairs), sum(-g > spread for g, spread in pairs)
        parts.append(f"{s.label} above {ref.label} by more than the seeds' spread at {above} of {len(pairs)} "
                     f"{plot.xlabel}s, below at {below}")
    return f"{plot.ylabel}: " + "; ".join(parts) if parts else ""


def _sd(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def margin_panel(sweep_frame: pd.DataFrame, axis: str, xlabel: str, term: str = "transformed") -> Plot | None:
    """The `term` loss term's alignment margin at the end of training (result.json's last metrics row: mean
    positive minus mean negative cosine, `pirl_ablate.health`; > 0: the term aligns its positives) against
    `axis`, one series per method, with a verdict over the points at x > 0 (where the term is trained); None when
    no run recorded it."""
    done = sweep_frame[(sweep_frame["status"] == STATUS_DONE) & (sweep_frame["protocol"] == "final")]
    keys = ["run_id", "method", axis, "seed"]
    pos = done[done["metric"] == f"pos_sim_{term}"].set_index(keys)["value"]
    neg = done[done["metric"] == f"neg_sim_{term}"].set_index(keys)["value"]
    margin = (pos - neg).dropna().rename("value").reset_index()
    margin = margin[margin[axis].notna()]
    if margin.empty:
        return None
    order, x_order = ordered(margin["method"].unique()), ordered(margin[axis].unique())
    plot = Plot(kind="line", xlabel=xlabel, ylabel=f"{term} term's alignment margin", logx=False,
                series=_series(margin, "method", axis, order, x_order), zero_line="0: no alignment")
    points = [(x, y, 0.0 if math.isnan(sd) else sd) for s in plot.series for x, y, sd in zip(s.x, s.y, s.std)
              if isinstance(x, numbers.Number) and x > 0]
    if points:
        aligned = sum(y - sd > 0 for _, y, sd in points)
        plot.verdict = (f"{plot.ylabel} above 0 by more than the seeds' spread at {aligned} of {len(points)} "
                        f"{xlabel} > 0" + (" (the term aligns its positives at every one)"
                                           if aligned == len(points) else ""))
    return plot


def _add_baseline(block: Block, plot: Plot, baseline: pd.DataFrame, rows: pd.DataFrame, multi: bool) -> None:
    """Random init's value for the plotted protocol/group/metric, per plotted dataset, as a row and a dashed
    line."""
    if baseline.empty:
        return
    protocol, group, metric = rows[["protocol", "group", "metric"]].iloc[0]
    base = baseline[(baseline["protocol"] == protocol) & (baseline["group"] == group)
                    & (baseline["metric"] == metric) & baseline["dataset"].isin(set(rows["dataset"]))]
    cells = {}
    for dataset, mean, std, n in aggregate(base, ["dataset"])[["dataset", "mean", "std", "n"]].itertuples(
            index=False):
        plot.baselines.append(Reference(f"{RANDOM_INIT} · {dataset}" if multi else RANDOM_INIT, float(mean),
                                        float(std) if n > 1 else math.nan, int(n)))
        for col in block.columns:
            if not multi or col.endswith(f" · {dataset}"):
                cells[col] = cell(mean, std, n)
    if cells:
        block.rows.append(Row(label=RANDOM_INIT, cells=cells, kind="baseline"))


# ------------------------------------------------------------------------------------------ generic sweep report
def sweep_report(frame: pd.DataFrame, sweep: str) -> Report:
    """Any sweep: one row per combination of its variant and swept bindings, one column per metric it produced
    (protocol/[dataset/]group/metric, the dataset named only when there are several), mean +- std over seeds."""
    sub = frame[frame["sweep"] == sweep]
    report = Report(name=sweep, title=f"sweep {sweep}: swept axes against metrics")
    if sub.empty:
        return report
    axes = [b for b in frame.attrs.get("bindings", []) if b in sub and sub[b].notna().any()]
    has_variant = sub["variant"].notna().any()
    keys = (["variant"] if has_variant else []) + axes
    short = _short_names(axes)
    done = sub[(sub["status"] == STATUS_DONE) & sub["metric"].notna()]
    parts = ["protocol", "dataset", "group", "metric"]
    col_keys = done[parts].drop_duplicates().itertuples(index=False, name=None)
    col_keys = sorted(col_keys, key=lambda k: (k[0] == "final", k[0], _natural(k[1]), _natural(k[2]), k[3]))
    several_datasets = len({k[1] for k in col_keys if k[0] != "final"}) > 1
    col_label = {k: "/".join(str(part) for i, part in enumerate(k) if part and (i != 1 or several_datasets))
                 for k in col_keys}
    done = done.assign(column=[col_label[k] for k in done[parts].itertuples(index=False, name=None)],
                       row=_row_labels(done, keys, short))
    row_order = list(dict.fromkeys(_row_labels(_sorted_runs(sub, keys), keys, short)))
    columns = list(dict.fromkeys(col_label[k] for k in col_keys))
    lower = frozenset(col_label[k] for k in col_keys if "loss" in k[3] or k[0] == "invariance")
    block = Block(title=f"runs/{sweep}", columns=columns, row_header=", ".join(
        (["variant"] if has_variant else []) + [short[a] for a in axes]) or "run",
                  rows=pivot_rows(done, "row", "column", row_order, columns, kind=lambda _: "method"),
                  lower_is_better=lower)
    block.mark_best()
    report.blocks.append(block)
    report.problems = problems(sub, set(done["run_id"]), "metric")
    report.runs_used = done["run_id"].nunique()
    if not (with_methods(frame, "")["method"] == RANDOM_INIT).any():
        report.notes.append(random_init_note())
    return report


def _short_names(axes: Sequence[str]) -> dict[str, str]:
    """"PIRL.lambda_" -> "lambda_" unless two axes would share the short name."""
    short = {a: a.rsplit(".", 1)[-1] for a in axes}
    counts = pd.Series(list(short.values())).value_counts()
    return {a: s if counts[s] == 1 else a for a, s in short.items()}


def _sorted_runs(sub: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    runs = runs_of(sub)
    if not keys:
        return runs
    sort_cols = [runs[k].map(lambda v: (0, v, "") if isinstance(v, numbers.Real) and not _missing(v)
                             else (1, 0, str(v))) for k in keys]
    order = sorted(range(len(runs)), key=lambda i: [c.iloc[i] for c in sort_cols])
    return runs.iloc[order]


def _row_labels(rows: pd.DataFrame, keys: list[str], short: dict[str, str]) -> list[str]:
    if not keys:
        return ["all runs"] * len(rows)
    cols = [rows[k].tolist() for k in keys]
    labels = []
    for values in zip(*cols):
        parts = []
        for k, v in zip(keys, values):
            if k == "variant":
                parts.append("—" if _missing(v) else str(v))
            else:
                parts.append(f"{short[k]}={'—' if _missing(v) else fmt_value(v)}")
        labels.append(", ".join(parts))
    return labels
