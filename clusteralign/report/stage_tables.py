"""One run's tables: its setup, each stage's metrics and deltas, and the anchor diagnostics."""

from __future__ import annotations

import copy
import math
from typing import Any

from .artifacts import CONTROL, METRIC_KEYS, STAGE_LABELS, ExperimentArtifacts
from .tables import DASH, DELTA, MINUS, Table, cell, delta_cell, percent


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


