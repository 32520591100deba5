"""The final report: load each experiment's artifacts, draw the figures, write HTML + Markdown.

The workflow's report step is `build.build_report`; for one experiment it amounts to::

    exp = load_experiment(name, description, {"stage1": dir1, "stage2": dir2})
    # with `control: true` in the description, also {..., CONTROL: dir_of_stage2_without_anchor_loss}
    figs = make_figures(exp, figure_dir / name)
    write_report([exp], {name: figs}, "results/report.html", "results/report.md", title)
"""

from __future__ import annotations

from .artifacts import (
    CONTROL,
    STAGE_LABELS,
    STAGES,
    ArtifactError,
    ArtifactMissingError,
    ExperimentArtifacts,
    ReplicatedExperiment,
    load_experiment,
    load_replicates,
    read_anchors,
    read_history,
    read_metrics,
    read_ranking,
)
from .build import build_report
from .figures import (
    FIGURE_KEYS,
    anchor_diagnostics,
    cmc_curves,
    combined_history,
    learning_curves,
    make_figures,
    retrieval_grid,
)
from .page import ReportInputError, write_report
from .prose import reading_notes

__all__ = [
    "CONTROL",
    "STAGE_LABELS",
    "STAGES",
    "FIGURE_KEYS",
    "ArtifactError",
    "ArtifactMissingError",
    "ExperimentArtifacts",
    "ReplicatedExperiment",
    "ReportInputError",
    "anchor_diagnostics",
    "build_report",
    "cmc_curves",
    "combined_history",
    "learning_curves",
    "load_experiment",
    "load_replicates",
    "make_figures",
    "read_anchors",
    "read_history",
    "read_metrics",
    "read_ranking",
    "reading_notes",
    "retrieval_grid",
    "write_report",
]
