"""The workflow's report step: every experiment's artifacts -> figures -> HTML and Markdown."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import ReportConfig
from .artifacts import ArtifactError, ExperimentArtifacts, load_experiment
from .figures import make_figures
from .page import write_report


def build_report(
    descriptions: Iterable[dict[str, Any]],
    inputs: Mapping[str, str | os.PathLike],
    html_path: str | os.PathLike,
    md_path: str | os.PathLike,
    cfg: ReportConfig,
) -> tuple[Path, Path]:
    """Write the report of every described experiment; returns the HTML and Markdown paths.

    `inputs` maps ``"<experiment>/<stage>/<file>"`` to the artifact's path (the report rule's
    named inputs), so each stage's folder is where its files are. The figures go to
    ``report/<experiment>/`` beside the HTML.
    """
    stage_dirs: dict[str, dict[str, Path]] = {}
    for key, path in inputs.items():
        parts = key.split("/")
        if len(parts) != 3:
            raise ArtifactError(f"report input {key!r}: expected '<experiment>/<stage>/<file>'")
        stage_dirs.setdefault(parts[0], {})[parts[1]] = Path(path).parent
    experiments: list[ExperimentArtifacts] = []
    figures: dict[str, dict[str, Path]] = {}
    figure_root = Path(html_path).parent / "report"
    for description in descriptions:
        name = description["name"]
        exp = load_experiment(name, description, stage_dirs.get(name, {}))
        experiments.append(exp)
        figures[name] = make_figures(exp, figure_root / name, max_examples=cfg.retrieval_examples)
    return write_report(experiments, figures, html_path, md_path, title=cfg.title)
