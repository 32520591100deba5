"""The report page: the summary over experiments, then each experiment's section, as HTML and Markdown.

Both files are pure functions of their inputs — no timestamps, no absolute paths, a fixed order —
so rerunning the report on the same artifacts rewrites the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ReportConfig
from ..io import write_bytes
from .artifacts import CONTROL, ExperimentArtifacts, ReplicatedExperiment
from .figures import ANCHORS, CMC, FIGURE_KEYS, LEARNING_CURVES, RETRIEVAL
from .prose import CROSS_DOMAIN_NOTE, PlacedFigure, place_figures, reading_notes
from .render import render_html, render_markdown, slug
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
from .stage_tables import anchor_table, metrics_table, model_name, setup_table
from .statistics import mean_sd
from .tables import DASH, DELTA, Cell, Table, cell, delta_cell, percent_spread


class ReportInputError(ValueError):
    """The arguments of `write_report` do not fit together (unknown experiment or figure names)."""


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


@dataclass(frozen=True)
class ExperimentSection:
    """One experiment's part of the page, as blocks both renderers walk in the same order."""

    rexp: ReplicatedExperiment
    slug: str
    figures: dict[str, PlacedFigure]
    comps: Comparisons

    @property
    def name(self) -> str:
        return self.rexp.name

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
    sections = [ExperimentSection(rexp, slug(rexp.name, taken), place_figures(rexp.first, figure_paths.get(rexp.name, {})),
                         comps[rexp.name]) for rexp in experiments]
    summary, notes = summary_table(experiments, comps), reading_notes([rexp.first for rexp in experiments])
    verdicts = [verdict(rexp, comps[rexp.name]) for rexp in experiments]
    # The HTML is pure ASCII (character references), so no reader can mistake its encoding.
    page = render_html(title, summary, verdicts, notes, sections).encode("ascii", "xmlcharrefreplace")
    write_bytes(html_path, page)
    write_bytes(md_path, render_markdown(title, summary, verdicts, notes, sections, md_path.parent).encode("utf-8"))
    return html_path, md_path
