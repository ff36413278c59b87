"""The paper's tables and figures, registered by number: `report --table 5` runs `TABLES.get("table5")`.

Each entry is a function `(frame) -> Report` over the frame of `load_results` (all runs under the results folder);
its `sweep` parameter names the sweep that feeds it (`sweeps/<sweep>.gin`, results under `runs/<sweep>/`), which
`pirl-ablate list tables` shows. Rows are named by the runs' variants (`build.METHOD_LABELS`); runs without a
variant are labelled with the table's default method. The paper's numbers come from `paper.py`.
"""

from __future__ import annotations

import pandas as pd

from pirl_ablate.layers import LAYERS
from pirl_ablate.report import paper
from pirl_ablate.report.build import (
    PROBES,
    RANDOM_INIT,
    caption,
    delta_row,
    find_axis,
    fmt_value,
    kind_of,
    line_figure,
    margin_panel,
    ordered,
    paper_block,
    pivot_rows,
    problems,
    random_init_note,
    random_init_rows,
    select,
    separation_per_x,
    with_methods,
)
from pirl_ablate.report.model import Block, Plot, Report, Row, Series, cell
from pirl_ablate.report.registry import register_table
from pirl_ablate.report.results import read_histograms
from pirl_ablate.runs import STATUS_DONE

TABLE2_ORDER = ("NPID", "NPID++", "Jigsaw", "Rotation", "PIRL", RANDOM_INIT, "supervised")
TABLE5_ORDER = ("Rotation", "Jigsaw", "PIRL (Rotation)", "PIRL (Jigsaw)", "PIRL (Rotation+Jigsaw)")
NEGATIVE_SOURCES = ("memory_bank", "momentum_queue", "in_batch")


def _prepare(frame: pd.DataFrame, sweep: str, default: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(all runs with methods, this sweep's method rows, random-init rows: the sweep's own, else other sweeps')."""
    frame = with_methods(frame, default)
    mine = frame[frame["sweep"] == sweep]
    return frame, mine[mine["method"] != RANDOM_INIT], random_init_rows(frame, sweep)


def _per_dataset_blocks(report: Report, sweep_rows: pd.DataFrame, baseline: pd.DataFrame, protocol: str,
                        metric: str, group: str, order: tuple[str, ...], need: str) -> set[str]:
    """One block, columns = evaluation datasets, rows = methods (+ random init from elsewhere). Run ids used."""
    rows = pd.concat([select(sweep_rows, protocol, metric, group), select(baseline, protocol, metric, group)])
    columns = ordered(rows["dataset"].unique())
    block = Block(title=f"ours: {need}", columns=columns,
                  rows=pivot_rows(rows, "method", "dataset", ordered(rows["method"].unique(), order), columns))
    block.mark_best()
    if block.rows:
        report.blocks.append(block)
    return set(select(sweep_rows, protocol, metric, group)["run_id"])


def _per_dataset_group_blocks(report: Report, sweep_rows: pd.DataFrame, baseline: pd.DataFrame, protocol: str,
                              metric: str, group_order: tuple[str, ...], order: tuple[str, ...], need: str
                              ) -> set[str]:
    """One block per evaluation dataset, columns = groups (layers or label fractions), rows = methods."""
    rows = pd.concat([select(sweep_rows, protocol, metric), select(baseline, protocol, metric)])
    for dataset in ordered(rows["dataset"].unique()):
        part = rows[rows["dataset"] == dataset]
        columns = ordered(part["group"].unique(), group_order)
        block = Block(title=f"ours: {need} on {dataset}", columns=columns,
                      rows=pivot_rows(part, "method", "group", ordered(part["method"].unique(), order), columns))
        block.mark_best()
        report.blocks.append(block)
    return set(select(sweep_rows, protocol, metric)["run_id"])


def _finish(report: Report, frame: pd.DataFrame, sweep_rows: pd.DataFrame, used: set[str], need: str) -> Report:
    own_baseline = frame[frame["sweep"].isin(set(sweep_rows["sweep"])) & (frame["method"] == RANDOM_INIT)]
    used = used | set(own_baseline.loc[own_baseline["status"] == STATUS_DONE, "run_id"])
    report.problems = problems(pd.concat([sweep_rows, own_baseline]), used, need)
    report.runs_used = len(used)
    if report.has_results and not (frame["method"] == RANDOM_INIT).any():
        report.notes.append(random_init_note())
    return report


@register_table("table2", configurable=False)
def table2(frame: pd.DataFrame, sweep: str = "loss_variants") -> Report:
    """Table 2: loss variants, linear top-1 (res5) per evaluation dataset, with random-init and supervised rows."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="table2", title="Table 2: linear classification with res5 features, by loss")
    used = _per_dataset_blocks(report, rows, baseline, "linear", "top1", "res5", TABLE2_ORDER, "linear top-1 (res5)")
    used |= _per_dataset_blocks(report, rows, baseline, "svm", "mAP", "res5", TABLE2_ORDER, "linear SVM mAP (res5)")
    report.blocks.append(paper_block(f"{paper.PAPER_LABEL}: Table 2, top-1 (VOC07: mAP)", paper.LINEAR_DATASETS,
                                     paper.TABLE2))
    return _finish(report, frame, rows, used, "linear (res5)")


@register_table("table3", configurable=False)
def table3(frame: pd.DataFrame, sweep: str = "loss_variants") -> Report:
    """Table 3: semi-supervised fine-tuning with 1% and 10% of the labels, top-5."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="table3", title="Table 3: semi-supervised fine-tuning, top-5 by label fraction")
    used = _per_dataset_group_blocks(report, rows, baseline, "semisup", "top5", paper.SEMISUP_FRACTIONS,
                                     TABLE2_ORDER, "semi-supervised top-5")
    report.blocks.append(paper_block(f"{paper.PAPER_LABEL}: Table 3, top-5", paper.SEMISUP_FRACTIONS,
                                     paper.TABLE3))
    return _finish(report, frame, rows, used, "semisup top-5")


@register_table("table5", configurable=False)
def table5(frame: pd.DataFrame, sweep: str = "pretext") -> Report:
    """Table 5: PIRL with other pretext tasks (Rotation, Jigsaw, Rotation+Jigsaw), linear top-1, deltas vs covariant."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL (Jigsaw)")
    report = Report(name="table5", title="Table 5: PIRL with other pretext tasks, linear top-1 (res5)")
    used = _per_dataset_blocks(report, rows, baseline, "linear", "top1", "res5", TABLE5_ORDER, "linear top-1 (res5)")
    used |= _per_dataset_blocks(report, rows, baseline, "svm", "mAP", "res5", TABLE5_ORDER, "linear SVM mAP (res5)")
    published = paper_block(f"{paper.PAPER_LABEL}: Table 5, top-1 (VOC07: mAP)", paper.LINEAR_DATASETS,
                            paper.TABLE5)
    for block in [*report.blocks, published]:
        for pirl, covariant in (("PIRL (Rotation)", "Rotation"), ("PIRL (Jigsaw)", "Jigsaw")):
            delta = delta_row(block, pirl, covariant)
            if delta is not None:
                block.rows.append(delta)
    report.blocks.append(published)
    return _finish(report, frame, rows, used, "linear (res5)")


@register_table("table7", configurable=False)
def table7(frame: pd.DataFrame, sweep: str = "layers") -> Report:
    """Table 7: linear top-1 of each layer's features, conv1 to res5, per method."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="table7", title="Table 7: linear top-1 per layer")
    used = _per_dataset_group_blocks(report, rows, baseline, "linear", "top1", LAYERS,
                                     (RANDOM_INIT, "Jigsaw", "NPID++", "PIRL"), "linear top-1")
    report.blocks.append(paper_block(f"{paper.PAPER_LABEL}: Table 7, ImageNet top-1", LAYERS, paper.TABLE7))
    return _finish(report, frame, rows, used, "linear (per layer)")


@register_table("figure4", configurable=False)
def figure4(frame: pd.DataFrame, sweep: str = "loss_variants") -> Report:
    """Figure 4: invariance, histograms of distances between the representations of I and I^t relative to the
    distance between different images (so a collapsed network is not "invariant"), PIRL vs Jigsaw, with the mean
    relative distance of the heads (f vs g) and of pooled res5 per method, random init included."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="figure4", title="Figure 4: invariance of representations to the pretext transform",
                    notes=[f"{paper.PAPER_LABEL}: {paper.FIGURE_CLAIMS['figure4']}"])
    inv = rows[(rows["status"] == "done") & (rows["protocol"] == "invariance")]
    hists = read_histograms(inv)
    methods = ordered(inv["method"].unique(), ("PIRL", "Jigsaw"))
    plot = Plot(kind="hist", xlabel="distance between I and I^t / mean distance between different images",
                ylabel="fraction of pairs", series=[])
    used: set[str] = set()
    multi = inv["dataset"].nunique() > 1
    shown = [m for m in methods if m in ("PIRL", "Jigsaw")] or methods  # the paper's figure: PIRL vs Jigsaw
    for dataset in ordered(inv["dataset"].unique()):
        for method in shown:
            run_ids = ordered(inv[(inv["method"] == method) & (inv["dataset"] == dataset)]["run_id"].unique())
            hist = _pooled_histogram([hists[(r, dataset)] for r in run_ids if (r, dataset) in hists])
            if hist is None:
                continue
            used.update(r for r in run_ids if (r, dataset) in hists)
            plot.series.append(Series(label=f"{method} · {dataset}" if multi else method, x=hist[0], y=hist[1]))
    stats = pd.concat([select(rows, "invariance", "relative"), select(baseline, "invariance", "relative")])
    columns = ordered(stats["group"].unique(), ("heads", "res5"))
    multi = stats["dataset"].nunique() > 1
    stats = stats.assign(label=[f"{m} · {d}" if multi else m for m, d in zip(stats["method"], stats["dataset"])])
    block = Block(title="ours: relative invariance d(I, I^t) / d(I, I'), lower = more invariant", columns=columns,
                  rows=pivot_rows(stats, "label", "group", ordered(stats["label"].unique(), ("PIRL", "Jigsaw")),
                                  columns, kind=lambda label: kind_of(label.split(" · ")[0])),
                  lower_is_better=frozenset(columns), ranked=frozenset(columns))
    block.mark_best()
    if block.rows:
        report.blocks.append(block)
    if plot.series:
        plot.caption = caption(inv[inv["run_id"].isin(used)], {len(used)})
        plot.paper = f"{paper.PAPER_LABEL}: {paper.FIGURE_CLAIMS['figure4']}"
        report.plot = plot
    return _finish(report, frame, rows, used | set(select(rows, "invariance", "relative")["run_id"]), "invariance")


def _pooled_histogram(hists: list[dict[str, list[float]]]) -> tuple[list[float], list[float]] | None:
    """Counts summed over seeds (runs with other bin edges than the first are left out), as fractions."""
    if not hists:
        return None
    edges = hists[0]["edges"]
    counts = [0.0] * len(hists[0]["counts"])
    for h in hists:
        if h["edges"] == edges:
            counts = [a + b for a, b in zip(counts, h["counts"])]
    total = sum(counts) or 1.0
    return edges, [c / total for c in counts]


@register_table("figure5", configurable=False)
def figure5(frame: pd.DataFrame, sweep: str = "layers") -> Report:
    """Figure 5: linear top-1 per layer, PIRL vs Jigsaw (line plot)."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="figure5", title="Figure 5: representation quality per layer",
                    notes=[f"{paper.PAPER_LABEL}: {paper.FIGURE_CLAIMS['figure5']}"])
    probe = pd.concat([select(rows, "linear", "top1"), select(baseline, "linear", "top1")])
    multi = probe["dataset"].nunique() > 1
    probe = probe.assign(series=[f"{m} · {d}" if multi else m for m, d in zip(probe["method"], probe["dataset"])])
    layers = ordered(probe["group"].unique(), LAYERS)
    series = ordered(probe["series"].unique(), ("PIRL", "Jigsaw"))
    block = Block(title="ours: linear top-1 per layer", columns=series, row_header="layer",
                  rows=pivot_rows(probe, "group", "series", layers, series, kind=lambda _: "method"))
    block.mark_best()
    plot = Plot(kind="line", xlabel="layer", ylabel="linear top-1", series=[])
    for s in series:
        points = [(r.label, r.cells[s]) for r in block.rows if s in r.cells]
        plot.series.append(Series(label=s, x=[p[0] for p in points], y=[p[1].mean for p in points],
                                  std=[p[1].std for p in points], n=[p[1].n for p in points]))
    plot.caption = caption(probe, {n for s in plot.series for n in s.n})
    plot.verdict = separation_per_x(plot)
    report.notes += [plot.verdict] if plot.verdict else []
    plot.paper = f"{paper.PAPER_LABEL}, Table 7 (ImageNet top-1, dashed): {paper.FIGURE_CLAIMS['figure5']}"
    plot.paper_series = [Series(label=f"{method} ({paper.PAPER_LABEL})", x=list(LAYERS),
                                y=list(paper.TABLE7[method])) for method in ("PIRL", "Jigsaw")]
    if block.rows:
        report.blocks.append(block)
        report.plot = plot
    report.blocks.append(paper_block(f"{paper.PAPER_LABEL}: Table 7, ImageNet top-1", LAYERS, paper.TABLE7))
    return _finish(report, frame, rows, set(select(rows, "linear", "top1")["run_id"]), "linear (per layer)")


@register_table("figure6", configurable=False)
def figure6(frame: pd.DataFrame, sweep: str = "lambda") -> Report:
    """Figure 6: effect of lambda (weight of the transformed-image term) on linear top-1."""
    report = _line("figure6", "Figure 6: effect of lambda", frame, sweep, ("lambda",), "lambda", positive_only=True)
    rows = _prepare(frame, sweep, "PIRL")[1]
    axis = find_axis(rows, ("lambda",)) if not rows.empty else None
    margin = margin_panel(rows, axis, "lambda") if axis is not None and report.plot is not None else None
    if margin is not None:
        report.plot.panels.append(margin)
        report.notes += [margin.verdict] if margin.verdict else []
        xs = ordered({x for s in margin.series for x in s.x})
        report.blocks.append(Block(
            title=f"{margin.ylabel} (last epoch) vs lambda", columns=[s.label for s in margin.series],
            row_header="lambda", rows=[Row(label=fmt_value(x), cells={
                s.label: cell(y, sd, n) for s in margin.series for sx, y, sd, n in zip(s.x, s.y, s.std, s.n)
                if sx == x}) for x in xs]))
    return report


@register_table("figure7", configurable=False)
def figure7(frame: pd.DataFrame, sweep: str = "num_permutations") -> Report:
    """Figure 7: effect of the number of permutations |T|, PIRL vs Jigsaw, log x axis; VOC07 linear SVM mAP as the
    paper plots it where the runs have `svm` results, else linear / kNN top-1."""
    return _line("figure7", "Figure 7: effect of the number of permutations |T|", frame, sweep,
                 ("num_permutations", "permutation"), "|T| (number of permutations)", logx=True,
                 probes=(("svm", "mAP"), *PROBES))


@register_table("figure8", configurable=False)
def figure8(frame: pd.DataFrame, sweep: str = "negatives") -> Report:
    """Figure 8: effect of the number of negatives N on linear top-1."""
    return _line("figure8", "Figure 8: effect of the number of negatives N", frame, sweep,
                 ("num_negatives", "negative"), "N (negatives)", logx=True)


def _line(name: str, title: str, frame: pd.DataFrame, sweep: str, hints: tuple[str, ...], xlabel: str,
          logx: bool = False, probes: tuple[tuple[str, str], ...] = PROBES, positive_only: bool = False) -> Report:
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name=name, title=title, notes=[f"{paper.PAPER_LABEL}: {paper.FIGURE_CLAIMS[name]}"])
    used = line_figure(report, rows, baseline, find_axis(rows, hints) if not rows.empty else None, xlabel, logx,
                       probes, positive_only)
    if report.plot is not None:
        report.plot.paper = f"{paper.PAPER_LABEL}: {paper.FIGURE_CLAIMS[name]}"
        report.plot.paper_best_x = paper.FIGURE_BEST_X.get(name)
    return _finish(report, frame, rows, used, "linear or knn top-1")


@register_table("table1", configurable=False)
def table1(frame: pd.DataFrame, sweep: str = "transfer") -> Report:
    """Table 1: VOC07+12 detection (Faster R-CNN C4 fine-tuned from each run), VOC07 test AP / AP50 / AP75."""
    return _detection("table1", "Table 1: VOC07+12 detection, Faster R-CNN C4", frame, sweep, "voc0712",
                      paper.TABLE1)


@register_table("table6", configurable=False)
def table6(frame: pd.DataFrame, sweep: str = "transfer") -> Report:
    """Table 6: VOC07-only detection (Faster R-CNN C4), VOC07 test AP / AP50 / AP75."""
    return _detection("table6", "Table 6: VOC07 detection, Faster R-CNN C4", frame, sweep, "voc07", paper.TABLE6)


def _detection(name: str, title: str, frame: pd.DataFrame, sweep: str, paper_dataset: str,
               published: dict[str, tuple[float, ...]]) -> Report:
    """One block per detection dataset and detector (rows = methods, columns = AP, AP50, AP75 (Detectron2's VOC
    evaluator, the paper's), coco_AP (pycocotools))."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name=name, title=title)
    both = pd.concat([rows, baseline])
    det = both[(both["status"] == STATUS_DONE) & (both["protocol"] == "detection")]
    columns = [*paper.DETECTION_METRICS, "coco_AP"]
    datasets = ordered(det["dataset"].unique(), (paper_dataset,))
    for dataset in datasets:
        for group in ordered(det[det["dataset"] == dataset]["group"].unique(), ("c4", "fpn")):
            part = det[(det["dataset"] == dataset) & (det["group"] == group)]
            block = Block(title=f"ours: {dataset} detection ({group}), VOC07 test", columns=columns,
                          rows=pivot_rows(part, "method", "metric", ordered(part["method"].unique(), TABLE2_ORDER),
                                          columns))
            block.mark_best()
            if block.rows:
                report.blocks.append(block)
    report.blocks.append(paper_block(f"{paper.PAPER_LABEL}: {title.split(':')[0]}, AP / AP50 / AP75",
                                     paper.DETECTION_METRICS, published))
    return _finish(report, frame, rows, set(rows[rows["protocol"] == "detection"]["run_id"]), "detection")


@register_table("negative_source", configurable=False)
def negative_source(frame: pd.DataFrame, sweep: str = "negative_source") -> Report:
    """Beyond the paper: PIRL and NPID with each source of negatives (memory bank, momentum queue, in-batch),
    linear top-1 (res5) and kNN top-1 per evaluation dataset, with random init."""
    frame, rows, baseline = _prepare(frame, sweep, "PIRL")
    report = Report(name="negative_source", title="Beyond the paper: the source of negatives, PIRL and NPID",
                    notes=["not in the paper (it compares PIRL with MoCo, Table 2, but never swaps PIRL's negatives)"])
    axis = find_axis(rows, ("negatives",)) if not rows.empty else None
    used: set[str] = set()
    for protocol, metric, group, need in (("linear", "top1", "res5", "linear top-1 (res5)"),
                                          ("knn", "top1", None, "kNN top-1")):
        picked = select(rows, protocol, metric, group)
        if axis is None or picked.empty:
            continue
        picked = picked.assign(source=picked[axis].fillna("memory_bank"))
        for dataset in ordered(picked["dataset"].unique()):
            part = picked[picked["dataset"] == dataset]
            columns = ordered(part["source"].unique(), NEGATIVE_SOURCES)
            block = Block(title=f"ours: {need} on {dataset}", columns=columns, row_header="method / negatives",
                          rows=pivot_rows(part, "method", "source", ordered(part["method"].unique(), ("PIRL", "NPID")),
                                          columns))
            block.mark_best()
            report.blocks.append(block)
        base = select(baseline, protocol, metric, group)
        if not base.empty:
            datasets = ordered(base["dataset"].unique())
            report.blocks.append(Block(title=f"{RANDOM_INIT}: {need}", columns=datasets,
                                       rows=pivot_rows(base, "method", "dataset", [RANDOM_INIT], datasets)))
        used |= set(picked["run_id"])
    return _finish(report, frame, rows, used, "linear or knn top-1")
