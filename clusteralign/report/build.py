"""The workflow's report step: every experiment's artifacts -> figures -> HTML, Markdown and summary.csv."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..config import ReportConfig
from ..io import write_text
from .artifacts import ArtifactError, ReplicatedExperiment, load_replicates
from .figures import make_figures
from .page import write_report
from .replicates import summary_frame

_INPUT_KEY = re.compile(r"^(?P<experiment>[^/]+)/rep(?P<replicate>[0-9]+)/(?P<stage>[^/]+)/(eval/[^/]+/)?[^/]+$")


def _replicate_dirs(inputs: Mapping[str, str | os.PathLike]) -> dict[str, list[dict[str, Path]]]:
    """Each experiment's stage folders per replicate, from the report rule's named inputs."""
    found: dict[str, dict[int, dict[str, Path]]] = {}
    for key, path in inputs.items():
        match = _INPUT_KEY.match(key)
        if match is None:
            raise ArtifactError(f"report input {key!r}: expected '<experiment>/rep<r>/<stage>/<file>' or "
                                "'<experiment>/rep<r>/<stage>/eval/<dataset>/<file>'")
        # An evaluation's file lies two folders below its stage's.
        stage_dir = Path(path).parent if match.group(4) is None else Path(path).parents[2]
        reps = found.setdefault(match["experiment"], {})
        reps.setdefault(int(match["replicate"]), {})[match["stage"]] = stage_dir
    out = {}
    for name, reps in found.items():
        if sorted(reps) != list(range(len(reps))):
            raise ArtifactError(f"experiment {name!r}: replicates {sorted(reps)} given; expected 0 to {len(reps) - 1}")
        out[name] = [reps[r] for r in range(len(reps))]
    return out


def build_report(
    descriptions: Iterable[dict[str, Any]],
    inputs: Mapping[str, str | os.PathLike],
    html_path: str | os.PathLike,
    md_path: str | os.PathLike,
    cfg: ReportConfig,
    summary_path: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write the report of every described experiment; returns the HTML and Markdown paths.

    `inputs` maps ``"<experiment>/rep<r>/<stage>/<file>"`` (and ``.../<stage>/eval/<dataset>/<file>``
    for its evaluations) to the artifact's path (the report rule's named inputs), so each stage's
    folder is where its files are. The figures (of
    replicate 0) go to ``report/<experiment>/`` beside the HTML; `summary_path`, when given,
    receives the tidy table of every replicate's metrics.
    """
    dirs = _replicate_dirs(inputs)
    experiments: list[ReplicatedExperiment] = []
    figures: dict[str, dict[str, Path]] = {}
    figure_root = Path(html_path).parent / "report"
    for description in descriptions:
        name = description["name"]
        rexp = load_replicates(name, description, dirs.get(name, []))
        experiments.append(rexp)
        figures[name] = make_figures(rexp.first, figure_root / name, max_examples=cfg.retrieval_examples)
    if summary_path is not None:
        write_text(summary_path, summary_frame(experiments).to_csv(index=False, float_format="%.17g"))
    return write_report(experiments, figures, html_path, md_path, title=cfg.title)
