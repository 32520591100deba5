"""What an experiment's replicates say: each one's metrics, their spread, paired differences, a verdict.

The question the paper asks is whether stage 2's anchor loss improves on stage 1, and the
control separates the anchor loss from simply training longer. Single runs move by points
between seeds and machines, so every difference comes with a 95% confidence interval: Student
t over replicates when there are several, a paired bootstrap over queries for a single run
(see `statistics`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .artifacts import CONTROL, STAGE_LABELS, ExperimentArtifacts, ReplicatedExperiment
from .statistics import BOOTSTRAP_DRAWS, PER_QUERY_METRICS, Interval, bootstrap_interval, mean_sd, t_interval
from .tables import DASH, DELTA, MINUS, PLUS_MINUS, Cell, Table, cell, percent, percent_spread

# The stage-2 comparisons, by the arm stage 2 is compared with.
BASES: tuple[str, ...] = ("stage1", CONTROL)
COMPARISON_LABELS = {"stage1": f"{DELTA} stage 2 {MINUS} stage 1", CONTROL: f"{DELTA} stage 2 {MINUS} control"}
SUMMARY_METRICS: tuple[str, ...] = ("R1", "R5", "R10", "mAP", "mINP")

Comparisons = dict[str, dict[str, Interval]]


def arm_values(rexp: ReplicatedExperiment, stage: str, metric: str) -> list[float]:
    """`metric` of `stage` in every replicate (fractions)."""
    return [float(rep.metrics[stage][metric]) for rep in rexp.replicates]


def comparisons(rexp: ReplicatedExperiment) -> Comparisons:
    """stage 2 − stage 1 and stage 2 − control, per metric, with their intervals (where measurable)."""
    out: Comparisons = {}
    stages = rexp.stages
    for base in BASES:
        if base not in stages or "stage2" not in stages:
            continue
        if len(rexp.replicates) > 1:
            out[base] = {m: t_interval([b - a for a, b in zip(arm_values(rexp, base, m), arm_values(rexp, "stage2", m))])
                         for m in PER_QUERY_METRICS}
        elif {base, "stage2"} <= set(rexp.first.per_query):
            a, b = rexp.first.per_query[base], rexp.first.per_query["stage2"]
            out[base] = {m: bootstrap_interval(a, b, m) for m in PER_QUERY_METRICS}
    return out


def interval_text(iv: Interval) -> str:
    """A difference and its interval in percentage points: '+1.2 [-0.4, +2.8]'."""
    return f"{100 * iv.estimate:+.1f} [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}]".replace("-", MINUS)


def interval_cell(iv: Interval | None) -> Cell:
    if iv is None:
        return cell(DASH)
    # Coloured only when the interval excludes zero: the sign of a mean inside the noise means nothing.
    tone = ("pos" if iv.low > 0 else "neg") if iv.excludes_zero else ""
    return Cell(interval_text(iv), tone)


def replicate_table(rexp: ReplicatedExperiment) -> Table:
    """R1/mAP/mINP (%) of every arm in every replicate, then each arm's mean \u00b1 sd."""
    metrics = PER_QUERY_METRICS
    rows = [[cell(r), cell(STAGE_LABELS[s]), *(cell(percent(rep.metrics[s][m])) for m in metrics)]
            for r, rep in enumerate(rexp.replicates) for s in rexp.stages]
    if len(rexp.replicates) > 1:
        rows += [[cell(f"mean {PLUS_MINUS} sd"), cell(STAGE_LABELS[s]),
                  *(cell(percent_spread(*mean_sd(arm_values(rexp, s, m)))) for m in metrics)]
                 for s in rexp.stages]
    return Table(["Replicate", "Arm", *(f"{m} (%)" for m in metrics)], rows, numeric_from=2)


def difference_table(comps: Comparisons) -> Table:
    """Each comparison's paired difference per metric, in pp, with its 95% interval."""
    rows = [[cell(COMPARISON_LABELS[base]), *(interval_cell(comps[base].get(m)) for m in PER_QUERY_METRICS)]
            for base in BASES if base in comps]
    return Table(["", *(f"{m} (pp, 95% CI)" for m in PER_QUERY_METRICS)], rows)


def method_note(comps: Comparisons) -> str:
    """How the intervals were computed, and what they cover."""
    iv = next((ivs["mAP"] for ivs in comps.values()), None)
    if iv is None:
        return ("No confidence interval: a single run without per-query results. Set `replicates:` above 1 "
                "in the experiment's config to measure how much the result varies between seeds.")
    level = f"{100 * iv.level:.0f}%"
    if iv.method == "t":
        freedom = f"{iv.n - 1} degree{'s' if iv.n > 2 else ''} of freedom"
        return (f"Intervals: {level} Student t over the {iv.n} replicates' paired differences ({freedom}); "
                "replicate r trains every arm with seed + r, so each difference is within one replicate.")
    return (f"Intervals: {level} paired bootstrap over the {iv.n} scored queries of this single run ({BOOTSTRAP_DRAWS:,} "
            "draws, seeded). They show how much the result depends on which queries the test split holds, not "
            "how much training varies from seed to seed: set `replicates:` above 1 for that.")


def _method_short(iv: Interval) -> str:
    if iv.method == "t":
        return f"Student t over {iv.n} replicates"
    return f"paired bootstrap over {iv.n} queries of one run, which leaves seed-to-seed variation out"


def verdict(rexp: ReplicatedExperiment, comps: Comparisons) -> str:
    """One plain sentence: is the anchor loss's gain over the control distinguishable from zero?"""
    level = f"{100 * next(iter(comps.values()))['mAP'].level:.0f}%" if comps else "95%"
    if CONTROL in comps:
        ivs = comps[CONTROL]
        mAP, r1 = ivs["mAP"], ivs["R1"]
        numbers = (f"mAP {interval_text(mAP)} pp, R1 {interval_text(r1)} pp ({level} CI, {_method_short(mAP)})")
        if not mAP.excludes_zero:
            return (f"{rexp.name}: the anchor loss's gain over the control is not distinguishable from zero "
                    f"at the {level} level: {numbers}.")
        direction = "gain" if mAP.low > 0 else "loss"
        return (f"{rexp.name}: the anchor loss's mAP {direction} over the control is distinguishable from zero "
                f"at the {level} level: {numbers}.")
    if "stage1" in comps:
        mAP = comps["stage1"]["mAP"]
        return (f"{rexp.name}: stage 2 {MINUS} stage 1 is mAP {interval_text(mAP)} pp ({level} CI, "
                f"{_method_short(mAP)}), which mixes the anchor loss with longer training; without a control "
                "(`control: true`) the anchor loss's own effect is not measured.")
    return f"{rexp.name}: no stage-2 comparison to make (a stage or its per-query results are missing)."


def test_sets(rexp: ReplicatedExperiment) -> list[str]:
    """The datasets every stage was evaluated on: the experiment's own, then its `test_datasets`."""
    return [str(rexp.description.get("dataset")), *rexp.first.cross]


def evaluation(rep: ExperimentArtifacts, stage: str, test_set: str, own: str) -> dict[str, Any]:
    """One replicate's metrics of `stage` on `test_set`'s test split."""
    return rep.metrics[stage] if test_set == own else rep.cross[test_set][stage]


def cross_domain_table(rexp: ReplicatedExperiment) -> Table:
    """R1/mAP (%, mean \u00b1 sd over replicates) of every stage on every dataset it was evaluated on."""
    sets = test_sets(rexp)
    own = sets[0]
    header = ["", *(f"{m} (%) on {d}" + (" (trained on)" if d == own else "") for d in sets for m in ("R1", "mAP"))]
    rows = [[cell(STAGE_LABELS[s]), *(cell(percent_spread(*mean_sd(
        [float(evaluation(rep, s, d, own)[m]) for rep in rexp.replicates]))) for d in sets for m in ("R1", "mAP"))]
        for s in rexp.stages]
    return Table(header, rows)


def summary_frame(experiments: list[ReplicatedExperiment]) -> pd.DataFrame:
    """The tidy table behind results/summary.csv, metrics as fractions.

    One row per experiment x replicate x arm x test dataset (the experiment's own dataset, then
    each of its `test_datasets`).
    """
    rows: list[dict[str, Any]] = []
    for rexp in experiments:
        desc = rexp.description
        sets = test_sets(rexp)
        for r, rep in enumerate(rexp.replicates):
            for stage in rexp.stages:
                settings = desc.get("stage1" if stage == "stage1" else "stage2")
                seed = settings.get("seed") if isinstance(settings, dict) else None
                for test_set in sets:
                    metrics = evaluation(rep, stage, test_set, sets[0])
                    rows.append({
                        "experiment": rexp.name,
                        "dataset": desc.get("dataset"),
                        "test_dataset": test_set,
                        "replicate": r,
                        "arm": stage,
                        "seed": None if not isinstance(seed, int) else seed + r,
                        **{m: metrics.get(m) for m in SUMMARY_METRICS},
                        "num_valid": metrics.get("num_valid"),
                        "num_skipped": metrics.get("num_skipped"),
                    })
    columns = ["experiment", "dataset", "test_dataset", "replicate", "arm", "seed", *SUMMARY_METRICS, "num_valid",
               "num_skipped"]
    return pd.DataFrame(rows, columns=columns)
