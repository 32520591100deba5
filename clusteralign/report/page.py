"""The report page: one self-contained HTML file (figures inlined) and a Markdown twin.

Both are pure functions of their inputs — no timestamps, no absolute paths, a fixed order —
so rerunning the report on the same artifacts rewrites the same bytes.
"""

from __future__ import annotations

import base64
import copy
import html
import math
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import ReportConfig
from ..io import write_bytes
from .artifacts import (
    CONTROL,
    METRIC_KEYS,
    STAGE_LABELS,
    ArtifactMissingError,
    ExperimentArtifacts,
    ReplicatedExperiment,
)
from .figures import ANCHORS, CMC, FIGURE_KEYS, LEARNING_CURVES, RETRIEVAL
from .replicates import (
    Comparisons,
    arm_values,
    comparisons,
    cross_domain_table,
    difference_table,
    interval_cell,
    method_note,
    replicate_table,
    verdict,
)
from .statistics import mean_sd
from .tables import DASH, DELTA, MINUS, Cell, Table, cell, delta_cell, percent, percent_spread


class ReportInputError(ValueError):
    """The arguments of `write_report` do not fit together (unknown experiment or figure names)."""



def _num(v: float | None) -> str:
    return DASH if v is None else f"{v:.4g}"


def _fmt(v: Any, spec: str) -> str:
    # Descriptions are plain config dicts; a value of an unexpected type is shown, not fatal.
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


# --------------------------------------------------------------------------- content


def model_name(description: dict[str, Any]) -> str:
    """Short model name for tables: the backbone (or the model entry itself when it is a name)."""
    model = description.get("model")
    if isinstance(model, str):
        return model
    name = _get(model, "backbone") or _get(model, "family")
    return str(name) if name is not None else DASH


def _metric(exp: ExperimentArtifacts, stage: str, key: str) -> float | None:
    v = exp.metrics.get(stage, {}).get(key)
    return None if v is None else float(v)


def _delta(exp: ExperimentArtifacts, key: str, source: str = "metrics", base: str = "stage1") -> float | None:
    """stage 2 \u2212 `base` of one metric (in pp) or anchor distance; None when either side is missing."""
    table = exp.metrics if source == "metrics" else exp.anchors
    a, b = table.get(base, {}).get(key), table.get("stage2", {}).get(key)
    if a is None or b is None:
        return None
    scale = 100.0 if source == "metrics" else 1.0
    return scale * (float(b) - float(a))


# Row labels of the two comparisons; the second isolates the anchor loss from the extra training.
DELTA_VS_STAGE1 = f"{DELTA} stage 2 {MINUS} stage 1"
DELTA_VS_CONTROL = f"{DELTA} stage 2 {MINUS} control"
_VS_CONTROL_MEANS = "anchor loss alone"
SUMMARY_VS_CONTROL = f"{DELTA} mAP vs control (pp) [95% CI]"


def _mean_cell(rexp: ReplicatedExperiment, stage: str, key: str) -> Cell:
    if stage not in rexp.stages:
        return cell(DASH)
    return cell(percent_spread(*mean_sd(arm_values(rexp, stage, key))))


def _mean_delta(rexp: ReplicatedExperiment, key: str, base: str = "stage1") -> float | None:
    """Mean over replicates of stage 2 \u2212 `base`, in pp; None when either arm is missing."""
    if not {base, "stage2"} <= set(rexp.stages):
        return None
    diffs = [b - a for a, b in zip(arm_values(rexp, base, key), arm_values(rexp, "stage2", key))]
    return 100.0 * sum(diffs) / len(diffs)


def summary_table(experiments: list[ReplicatedExperiment], comps: dict[str, Comparisons]) -> Table:
    """One row per experiment: stage-1 and stage-2 R1/mAP (mean ± sd over replicates) and their deltas in pp.

    When any experiment has the control run, a last column gives stage 2 − control mAP with its
    95% confidence interval (— for experiments without one).
    """
    with_control = any(rexp.has_control for rexp in experiments)
    rows = []
    for rexp in experiments:
        row = [
            cell(rexp.name),
            cell(rexp.description.get("dataset", DASH)),
            cell(model_name(rexp.description)),
            cell(len(rexp.replicates)),
            *(_mean_cell(rexp, stage, key) for stage in ("stage1", "stage2") for key in ("R1", "mAP")),
            delta_cell(_mean_delta(rexp, "R1")),
            delta_cell(_mean_delta(rexp, "mAP")),
        ]
        if with_control:
            interval = comps[rexp.name].get(CONTROL, {}).get("mAP")
            # Without an interval (one run, no per-query results), the difference alone.
            row.append(interval_cell(interval) if interval else delta_cell(_mean_delta(rexp, "mAP", CONTROL)))
        rows.append(row)
    header = ["Experiment", "Dataset", "Model", "Replicates", "Stage 1 R1 (%)", "Stage 1 mAP (%)", "Stage 2 R1 (%)",
              "Stage 2 mAP (%)", f"{DELTA}R1 (pp)", f"{DELTA}mAP (pp)"]
    if with_control:
        header.append(SUMMARY_VS_CONTROL)
    return Table(header, rows, numeric_from=3)


def metrics_table(exp: ExperimentArtifacts) -> Table:
    """R1/R5/R10/mAP/mINP (%) of every stage (the control too), then stage 2 \u2212 stage 1 and \u2212 control."""
    rows = [[cell(STAGE_LABELS[s]), *(cell(percent(_metric(exp, s, k))) for k in METRIC_KEYS)]
            for s in exp.stages if s in exp.metrics]
    labels = {"stage1": f"{DELTA_VS_STAGE1} (pp)", CONTROL: f"{DELTA_VS_CONTROL} ({_VS_CONTROL_MEANS}, pp)"}
    for base, label in labels.items():
        if base in exp.metrics and "stage2" in exp.metrics:
            rows.append([cell(label), *(delta_cell(_delta(exp, k, base=base)) for k in METRIC_KEYS)])
    return Table(["", *(f"{k} (%)" for k in METRIC_KEYS)], rows)


def anchor_table(exp: ExperimentArtifacts) -> Table:
    """Mean distance to the own and to the nearest other anchor, their ratio, per stage (the control too)."""
    rows = []
    for s in exp.stages:
        diag = exp.anchors.get(s)
        if diag is None:
            continue
        own, other, ratio = float(diag["anchor_dist_own"]), float(diag["anchor_dist_other"]), _ratio(diag)
        rows.append([cell(STAGE_LABELS[s]), cell(_num(own)), cell(_num(other)),
                     cell(DASH if ratio is None else f"{ratio:.3f}"), cell(diag.get("num_identities", DASH))])
    labels = {"stage1": DELTA_VS_STAGE1, CONTROL: f"{DELTA_VS_CONTROL} ({_VS_CONTROL_MEANS})"}
    for base, label in labels.items():
        if base not in exp.anchors or "stage2" not in exp.anchors:
            continue
        r1, r2 = _ratio(exp.anchors[base]), _ratio(exp.anchors["stage2"])
        rows.append([
            cell(label),
            # Raw distances move with the feature scale, so only the scale-free ratio is judged.
            delta_cell(_delta(exp, "anchor_dist_own", "anchors", base), higher_is_better=None, fmt="+.4g"),
            delta_cell(_delta(exp, "anchor_dist_other", "anchors", base), higher_is_better=None, fmt="+.4g"),
            delta_cell(None if r1 is None or r2 is None else r2 - r1, higher_is_better=False, fmt="+.3f"),
            cell(""),
        ])
    return Table(["", "own anchor", "nearest other anchor", "own / other", "identities"], rows)


def _ratio(diag: dict[str, Any]) -> float | None:
    other = float(diag["anchor_dist_other"])
    return float(diag["anchor_dist_own"]) / other if other > 0 else None


def _losses(loss: Any) -> str | None:
    if not isinstance(loss, dict):
        return None
    terms = []
    if loss.get("ce_weight"):
        eps = loss.get("label_smoothing")
        terms.append(f"CE \u00d7{_fmt(loss['ce_weight'], 'g')}" + (f" (label smoothing {_fmt(eps, 'g')})" if eps else ""))
    if loss.get("triplet_weight"):
        margin = loss.get("triplet_margin")
        terms.append(f"triplet \u00d7{_fmt(loss['triplet_weight'], 'g')}"
                     + (f" (margin {_fmt(margin, 'g')})" if margin is not None else " (soft margin)"))
    if loss.get("center_weight"):
        terms.append(f"center \u00d7{_fmt(loss['center_weight'], 'g')}")
    if loss.get("anchor_weight"):
        terms.append(f"anchor loss {loss.get('anchor_kind', '?')} \u00d7{_fmt(loss['anchor_weight'], 'g')}")
    return " + ".join(terms) if terms else None


def _batches(stage_cfg: Any) -> str | None:
    sampler = _get(stage_cfg, "sampler")
    if sampler == "random":
        return f"random batches of {_get(stage_cfg, 'batch_size')}"
    p, k = _get(stage_cfg, "num_identities"), _get(stage_cfg, "num_instances")
    return f"P\u00d7K batches of {p}\u00d7{k}" if sampler == "pk" and p and k else None


def _stage_facts(stage_cfg: Any, history: Any) -> str:
    parts = []
    epochs = _get(stage_cfg, "epochs")
    if epochs is not None:
        parts.append(f"{epochs} epochs")
    batches = _batches(stage_cfg)
    if batches:
        parts.append(batches)
    lr = _get(stage_cfg, "optimizer", "lr")
    if lr is not None:
        opt = _get(stage_cfg, "optimizer", "name")
        sched = _get(stage_cfg, "schedule", "kind")
        parts.append(f"{f'{opt} ' if opt else ''}lr {_fmt(lr, '.1e')}" + (f" ({sched})" if sched else ""))
    losses = _losses(_get(stage_cfg, "loss"))
    if losses:
        parts.append(losses)
    if _get(stage_cfg, "loss", "anchor_weight"):
        update = _get(stage_cfg, "anchors", "update")
        if update is not None:
            parts.append(f"anchors updated: {update}")
    if history is not None and "train_seconds" in history.columns:
        seconds = float(history["train_seconds"].sum(skipna=True))
        rate = history["images_per_second"].mean(skipna=True) if "images_per_second" in history.columns else math.nan
        parts.append(f"trained {len(history)} epochs in {_duration(seconds)}"
                     + (f" ({rate:.0f} img/s)" if math.isfinite(rate) else ""))
    return " \u00b7 ".join(parts) if parts else DASH


def _without_anchor_loss(stage_cfg: Any) -> Any:
    # The control's config is stage 2's with the anchor weight at 0 (the workflow derives it the same way).
    if not isinstance(stage_cfg, dict) or not isinstance(stage_cfg.get("loss"), dict):
        return stage_cfg
    cfg = copy.deepcopy(stage_cfg)
    cfg["loss"]["anchor_weight"] = 0.0
    return cfg


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _eval_facts(metrics: dict[str, Any]) -> str:
    parts = []
    if "metric" in metrics:
        parts.append(f"{metrics['metric']} distance")
    if "rerank" in metrics:
        parts.append("k-reciprocal re-ranking" if metrics["rerank"] else "no re-ranking")
    if "num_query" in metrics and "num_gallery" in metrics:
        parts.append(f"{metrics['num_query']} queries \u00d7 {metrics['num_gallery']} gallery images")
    if "num_valid" in metrics:
        parts.append(f"{metrics['num_valid']} queries scored, {metrics.get('num_skipped', 0)} without a true match skipped")
    return ", ".join(parts) if parts else DASH


def setup_table(exp: ExperimentArtifacts) -> Table:
    """The few facts of the experiment's config a reader needs to interpret its numbers."""
    desc = exp.description
    model = desc.get("model")
    if isinstance(model, dict):
        bits = [str(model.get("backbone", model_name(desc)))]
        for key, label in (("family", "family"), ("last_stride", "last stride"), ("neck", "neck"),
                           ("pretrained", "pretrained")):
            if key in model:
                bits.append(f"{label} {model[key]}")
        model_text = " \u00b7 ".join(bits)
    else:
        model_text = model_name(desc)
    rows = [[cell("Dataset"), cell(desc.get("dataset", DASH))], [cell("Model"), cell(model_text)]]
    count = desc.get("replicates", 1)
    if isinstance(count, int) and count > 1:
        rows.append([cell("Replicates"), cell(f"{count}, replicate r trains every stage with seed + r")])
    for s in ("stage1", "stage2"):
        if s in desc or s in exp.histories:
            rows.append([cell(STAGE_LABELS[s]), cell(_stage_facts(desc.get(s), exp.histories.get(s)))])
    if exp.has_control:
        facts = _stage_facts(_without_anchor_loss(desc.get("stage2")), exp.histories.get(CONTROL))
        rows.append([cell(STAGE_LABELS[CONTROL]), cell(f"as stage 2, anchor-loss weight 0 \u00b7 {facts}")])
    evals = {s: _eval_facts(exp.metrics[s]) for s in exp.stages if s in exp.metrics}
    if len(set(evals.values())) == 1:
        rows.append([cell("Evaluation"), cell(next(iter(evals.values())))])
    else:
        for s, text in evals.items():
            rows.append([cell(f"Evaluation, {STAGE_LABELS[s]}"), cell(text)])
    return Table(["Setting", "Value"], rows, numeric_from=99)


INTRO = (
    "Stage 1 (the strong baseline) against stage 2 (anchor fine-tuning) of cluster-level feature alignment "
    "for person re-identification (Chen, Zhang and Fan, arXiv 2008.06810), for every experiment of the workflow."
)

_DELTA_NOTE = (f"Every {DELTA} is stage 2 {MINUS} stage 1, in percentage points (pp) for metrics; "
               "green marks an improvement, red a loss.")

READING_NOTES: tuple[str, ...] = (
    "Stage 1 trains the strong baseline (BNNeck, label-smoothed cross-entropy + triplet loss). "
    "Stage 2 starts from the stage-1 weights and fine-tunes with cross-entropy plus the anchor loss, "
    "which pulls each training feature towards its identity's anchor.",
    "Metrics are percentages on the query/gallery split under the standard protocol (gallery images of the "
    "query's identity taken by the same camera are excluded). R-k: share of queries with a correct match in "
    "the top k (the CMC curve); mAP: mean average precision; mINP: mean inverse negative penalty, how deep "
    "the hardest correct match sits.",
    _DELTA_NOTE,
    "Anchor diagnostics are measured on training features of each stage's final model. An identity's anchor is "
    "the mean feature of its training images. \u201cOwn anchor\u201d is the mean Euclidean distance of a feature to "
    "its identity's anchor (intra-identity spread: smaller is tighter); \u201cnearest other anchor\u201d is the mean "
    "distance to the closest anchor of another identity (larger is better separated). Both move with the "
    "scale of the features, so the table colours only their ratio: a falling own/other ratio means more "
    "compact, better separated clusters, which is what the anchor loss aims for. It describes the training "
    "set, not generalisation.",
    "Learning curves put both stages on one epoch axis: stage-2 epochs continue after stage 1's, at the dashed "
    "line. The loss terms change between stages, so the total loss jumps there. Diamonds mark the anchor "
    "distances of each stage's final model.",
    "Retrieval figures: each row is a query (blue frame) followed by its ten nearest gallery images, "
    "green when they show the same identity and red otherwise, with the rank, identity, camera and distance.",
)

# Shown after the delta note, only when some experiment has the control run.
CONTROL_NOTE = (
    "The control is stage 2 trained exactly as configured (same stage-1 start, optimizer, lr, epochs and seed) "
    f"but without the anchor loss, so \u201c{DELTA_VS_CONTROL}\u201d is what the anchor loss itself "
    "buys, apart from simply training longer at a small lr. It is drawn dashed and lighter (after stage 1 in "
    "the learning curves), as the grey hatched bars of the anchor diagnostics, and has no retrieval figure."
)


def reading_notes(experiments: list[ExperimentArtifacts]) -> tuple[str, ...]:
    """The \u201chow to read\u201d notes; the control note only when some experiment has the control."""
    if not any(exp.has_control for exp in experiments):
        return READING_NOTES
    at = READING_NOTES.index(_DELTA_NOTE) + 1
    return (*READING_NOTES[:at], CONTROL_NOTE, *READING_NOTES[at:])


CROSS_DOMAIN_NOTE = (
    "Each trained stage is also evaluated on the test split of other datasets (`test_datasets`): their queries "
    "against their gallery, with the same feature extraction, ranking and evaluation settings as on the dataset "
    "it was trained on; mean \u00b1 sd over replicates."
)


@dataclass(frozen=True)
class PlacedFigure:
    """A figure placed on the page: its file and the caption shown under it."""

    path: Path
    caption: str


def _figures(exp: ExperimentArtifacts, paths: dict[str, Path]) -> dict[str, PlacedFigure]:
    captions = {
        LEARNING_CURVES: f"{exp.name}: losses, validation metrics and anchor distances over both stages"
                         + (" (dashed, lighter: the control, after stage 1)." if exp.has_control else "."),
        CMC: f"{exp.name}: CMC curves of stage 1 and stage 2"
             + (" (dashed: stage 2 without anchor loss, the control)." if exp.has_control else "."),
        ANCHORS: f"{exp.name}: mean distance to the own and the nearest other anchor after each stage.",
        **{key: f"{exp.name}, {STAGE_LABELS[s]}: queries and their top-10 gallery images."
           for s, key in RETRIEVAL.items()},
    }
    out = {}
    for key in FIGURE_KEYS:
        if key in paths:
            p = Path(paths[key])
            if not p.is_file():
                raise ArtifactMissingError(f"{p} does not exist; expected the {key} figure of experiment {exp.name!r}")
            out[key] = PlacedFigure(p, captions[key])
    return out


# --------------------------------------------------------------------------- rendering


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.15em}
h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1em}
th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pos{color:#11702b;background:#e6f4ea;font-weight:600}
td.neg{color:#b3261e;background:#fce8e6;font-weight:600}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}
.notes li{margin:.3em 0}
nav ul{columns:2}
""".strip()


def _slug(name: str, taken: set[str]) -> str:
    base = "exp-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            classes = (["num"] if i >= table.numeric_from else []) + ([c.tone] if c.tone else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(c.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _html_figure(fig: PlacedFigure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(fig.caption)}">'
            f"<figcaption>{_esc(fig.caption)}</figcaption></figure>")


def _md(text: Any) -> str:
    """Escape text for Markdown (and keep it on one line, for table cells)."""
    text = re.sub(r"\s*\n\s*", " ", str(text))
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text)


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md(h) for h in table.header) + " |",
             "|" + "|".join("---:" if i >= table.numeric_from else "---" for i in range(len(table.header))) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_md(c.text) for c in row) + " |")
    return "\n".join(lines)


def _md_figure(fig: PlacedFigure, md_dir: Path) -> str:
    rel = Path(os.path.relpath(os.path.abspath(fig.path), os.path.abspath(md_dir))).as_posix()
    return f"![{_md(fig.caption)}]({urllib.parse.quote(rel)})\n\n*{_md(fig.caption)}*"


@dataclass(frozen=True)
class _Section:
    """One experiment's part of the page, as blocks both renderers walk in the same order."""

    rexp: ReplicatedExperiment
    slug: str
    figures: dict[str, PlacedFigure]
    comps: Comparisons

    def blocks(self) -> Iterable[tuple[str, Any]]:
        rexp, figs, comps = self.rexp, self.figures, self.comps
        exp = rexp.first
        yield "h3", "Replicates" if len(rexp.replicates) > 1 else "Result"
        yield "table", replicate_table(rexp)
        if comps:
            yield "h3", "Paired differences"
            yield "table", difference_table(comps)
        yield "p", method_note(comps)
        yield "p", verdict(rexp, comps)
        if exp.cross:
            yield "h3", "Cross-domain"
            yield "table", cross_domain_table(rexp)
            yield "p", CROSS_DOMAIN_NOTE
        # The rest shows one run: with several replicates, replicate 0.
        of = " (replicate 0)" if len(rexp.replicates) > 1 else ""
        yield "h3", "Setup"
        yield "table", setup_table(exp)
        yield "h3", "Stage 1 vs stage 2" + (" vs control" if exp.has_control else "") + of
        yield "table", metrics_table(exp)
        if LEARNING_CURVES in figs:
            yield "h3", "Learning curves" + of
            yield "figure", figs[LEARNING_CURVES]
        if CMC in figs:
            yield "h3", "CMC" + of
            yield "figure", figs[CMC]
        if exp.anchors or ANCHORS in figs:
            yield "h3", "Anchor diagnostics" + of
            if exp.anchors:
                yield "table", anchor_table(exp)
            if ANCHORS in figs:
                yield "figure", figs[ANCHORS]
        retrieval = [figs[RETRIEVAL[s]] for s in exp.stages if s in RETRIEVAL and RETRIEVAL[s] in figs]
        if retrieval:
            yield "h3", "Ranked retrieval" + of
            for fig in retrieval:
                yield "figure", fig


def _render_html(title: str, summary: Table, verdicts: list[str], notes: tuple[str, ...],
                 sections: list[_Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>",
           f"<h1>{_esc(title)}</h1>", f"<p>{_esc(INTRO)}</p>", "<h2>Summary</h2>", _html_table(summary),
           *(f"<p>{_esc(v)}</p>" for v in verdicts),
           "<h2>How to read this report</h2>", '<ul class="notes">',
           *(f"<li>{_esc(note)}</li>" for note in notes), "</ul>"]
    if sections:
        out += ["<nav><h2>Experiments</h2><ul>",
                *(f'<li><a href="#{s.slug}">{_esc(s.rexp.name)}</a></li>' for s in sections), "</ul></nav>"]
    for section in sections:
        out.append(f'<section id="{section.slug}">')
        out.append(f"<h2>Experiment {_esc(section.rexp.name)}</h2>")
        for kind, block in section.blocks():
            if kind == "h3":
                out.append(f"<h3>{_esc(block)}</h3>")
            elif kind == "p":
                out.append(f"<p>{_esc(block)}</p>")
            elif kind == "table":
                out.append(_html_table(block))
            else:
                out.append(_html_figure(block))
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _render_markdown(
    title: str, summary: Table, verdicts: list[str], notes: tuple[str, ...], sections: list[_Section], md_dir: Path
) -> str:
    out = [f"# {_md(title)}", "", _md(INTRO), "", "## Summary", "", _md_table(summary), ""]
    out += [line for v in verdicts for line in (_md(v), "")]
    out += ["## How to read this report", ""]
    out += [f"- {_md(note)}" for note in notes]
    for section in sections:
        out += ["", f"## Experiment {_md(section.rexp.name)}"]
        for kind, block in section.blocks():
            out.append("")
            if kind == "h3":
                out.append(f"### {_md(block)}")
            elif kind == "p":
                out.append(_md(block))
            elif kind == "table":
                out.append(_md_table(block))
            else:
                out.append(_md_figure(block, md_dir))
    return "\n".join(out) + "\n"


def write_report(
    experiments: list[ReplicatedExperiment | ExperimentArtifacts],
    figure_paths: dict[str, dict[str, Path]],
    html_path: str | os.PathLike,
    md_path: str | os.PathLike,
    title: str = ReportConfig.title,
) -> tuple[Path, Path]:
    """Write the HTML report (figures inlined) and its Markdown twin; returns both paths.

    `figure_paths` maps an experiment name to ``{figure key: PNG path}`` as returned by
    `clusteralign.report.figures.make_figures`; the Markdown links to those files relative to
    its own folder. An `ExperimentArtifacts` is an experiment of one replicate.
    """
    experiments = [e if isinstance(e, ReplicatedExperiment) else ReplicatedExperiment(e.name, e.description, [e])
                   for e in experiments]
    names = [exp.name for exp in experiments]
    if len(set(names)) != len(names):
        raise ReportInputError(f"experiment names must be unique, got {names}")
    unknown = sorted(set(figure_paths) - set(names))
    if unknown:
        raise ReportInputError(
            f"figure_paths names experiment(s) {', '.join(unknown)} that are not in the report; "
            f"experiments: {', '.join(names) or 'none'}"
        )
    for name, paths in figure_paths.items():
        bad = sorted(set(paths) - set(FIGURE_KEYS))
        if bad:
            raise ReportInputError(
                f"figure_paths[{name!r}] has unknown figure key(s) {', '.join(bad)}; expected some of {', '.join(FIGURE_KEYS)}"
            )
    html_path, md_path = Path(html_path), Path(md_path)
    taken: set[str] = set()
    comps = {rexp.name: comparisons(rexp) for rexp in experiments}
    sections = [_Section(rexp, _slug(rexp.name, taken), _figures(rexp.first, figure_paths.get(rexp.name, {})),
                         comps[rexp.name]) for rexp in experiments]
    summary, notes = summary_table(experiments, comps), reading_notes([rexp.first for rexp in experiments])
    verdicts = [verdict(rexp, comps[rexp.name]) for rexp in experiments]
    # The HTML is pure ASCII (character references), so no reader can mistake its encoding.
    page = _render_html(title, summary, verdicts, notes, sections).encode("ascii", "xmlcharrefreplace")
    write_bytes(html_path, page)
    write_bytes(md_path, _render_markdown(title, summary, verdicts, notes, sections, md_path.parent).encode("utf-8"))
    return html_path, md_path
