"""Load what the training and evaluation steps wrote for one experiment, checking its shape.

Each stage folder holds ``history.csv`` and ``anchors.json``, and its evaluation on the
experiment's dataset in ``eval/<dataset>/``: ``metrics.json``, ``ranking.json`` and
``per_query.csv`` (and on each of its ``test_datasets`` beside it). A missing or malformed file stops the report with a message that names the
file and what was expected, instead of a figure silently drawn from half the data.

An experiment whose description says ``control: true`` has a third run, ``stage2_control``:
stage 2 trained exactly as configured but without the anchor loss, in a folder of the same form.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

# The control run: stage 2 from the same stage-1 weights, same optimizer, lr, epochs and seed,
# with the anchor-loss weight at 0. Stage 2 minus the control is what the anchor loss alone buys.
CONTROL = "stage2_control"
# Stage names in report order; the deltas on the page are stage2 - stage1 and stage2 - control.
STAGES: tuple[str, ...] = ("stage1", "stage2", CONTROL)
STAGE_LABELS: dict[str, str] = {
    "stage1": "Stage 1 (baseline)",
    "stage2": "Stage 2 (anchor)",
    CONTROL: "Stage 2 without anchor loss (control)",
}
METRIC_KEYS: tuple[str, ...] = ("R1", "R5", "R10", "mAP", "mINP")
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
ANCHORS_FILE = "anchors.json"
RANKING_FILE = "ranking.json"
PER_QUERY_FILE = "per_query.csv"
# A stage's evaluation on a dataset's test split lives in <stage folder>/eval/<dataset>/.
EVAL_DIR = "eval"
PER_QUERY_COLUMNS: tuple[str, ...] = ("path", "pid", "camid", "first_rank", "ap", "inp")


class ArtifactError(ValueError):
    """An artifact file exists but does not hold what the report expects."""


class ArtifactMissingError(ArtifactError, FileNotFoundError):
    """An artifact file the report needs does not exist."""


@dataclass
class ExperimentArtifacts:
    """Everything the report shows about one experiment, keyed by stage name."""

    name: str
    description: dict[str, Any]
    histories: dict[str, pd.DataFrame]
    metrics: dict[str, dict[str, Any]]
    anchors: dict[str, dict[str, Any]]
    rankings: dict[str, dict[str, Any]]
    # Where each stage was read from, so later errors (a missing retrieval image) can point at it.
    stage_dirs: dict[str, Path] = field(default_factory=dict)
    # Per stage, one row per query (PER_QUERY_COLUMNS), where the folder has per_query.csv.
    per_query: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Per other test dataset (`test_datasets`), each stage's metrics on its test split.
    cross: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        """The stages this experiment has, in report order."""
        present = set(self.histories) | set(self.metrics) | set(self.anchors) | set(self.rankings)
        return [s for s in STAGES if s in present]

    @property
    def has_control(self) -> bool:
        """Whether the stage-2 control run (no anchor loss) is part of this experiment."""
        return CONTROL in self.stages


def load_experiment(name: str, description: dict[str, Any], stage_dirs: dict[str, Path]) -> ExperimentArtifacts:
    """Read the four artifacts of every stage in `stage_dirs` (``{"stage1": dir, "stage2": dir}``).

    ``stage_dirs[CONTROL]`` (the stage-2 run without anchor loss) is required when
    ``description["control"]`` is true and refused otherwise, so the page never silently drops
    or invents the control.
    """
    if not isinstance(description, dict):
        raise ArtifactError(
            f"experiment {name!r}: the description must be a mapping of the experiment's config "
            f"(name, dataset, model, stage1, stage2), got {type(description).__name__}"
        )
    unknown = sorted(set(stage_dirs) - set(STAGES))
    if unknown or not stage_dirs:
        raise ArtifactError(
            f"experiment {name!r}: stage_dirs must map some of {', '.join(STAGES)} to folders, "
            f"got {sorted(stage_dirs) or 'nothing'}"
        )
    wants_control = description.get("control", False)
    if not isinstance(wants_control, bool):
        raise ArtifactError(
            f"experiment {name!r}: description key 'control' must be true or false, got {wants_control!r}"
        )
    if wants_control and CONTROL not in stage_dirs:
        raise ArtifactMissingError(
            f"experiment {name!r} has control: true but stage_dirs has no {CONTROL!r} folder; expected the "
            f"artifacts of stage 2 trained without the anchor loss (results/{name}/{CONTROL}/)"
        )
    if not wants_control and CONTROL in stage_dirs:
        raise ArtifactError(
            f"experiment {name!r}: stage_dirs has a {CONTROL!r} folder ({stage_dirs[CONTROL]}) but the description "
            "does not say control: true; set it in the experiment's config or leave the control folder out"
        )
    dirs = {stage: Path(stage_dirs[stage]) for stage in STAGES if stage in stage_dirs}
    own = {s: evaluation_dir(d, str(description.get("dataset"))) for s, d in dirs.items()}
    return ExperimentArtifacts(
        name=name,
        description=description,
        histories={s: read_history(d / HISTORY_FILE) for s, d in dirs.items()},
        metrics={s: read_metrics(d / METRICS_FILE) for s, d in own.items()},
        anchors={s: read_anchors(d / ANCHORS_FILE) for s, d in dirs.items()},
        rankings={s: read_ranking(d / RANKING_FILE) for s, d in own.items()},
        stage_dirs=dirs,
        per_query={s: read_per_query(d / PER_QUERY_FILE) for s, d in own.items() if (d / PER_QUERY_FILE).is_file()},
        cross={t: {s: read_metrics(evaluation_dir(d, t) / METRICS_FILE) for s, d in dirs.items()}
               for t in description.get("test_datasets", [])},
    )


def evaluation_dir(stage_dir: Path, dataset: str) -> Path:
    """Where a stage's evaluation on `dataset`'s test split is: metrics.json, ranking.json, per_query.csv."""
    return Path(stage_dir) / EVAL_DIR / dataset


@dataclass
class ReplicatedExperiment:
    """Every replicate of one experiment (replicate r trained each stage with seed + r)."""

    name: str
    description: dict[str, Any]
    replicates: list[ExperimentArtifacts]

    @property
    def first(self) -> ExperimentArtifacts:
        """Replicate 0: the one the report draws figures and detailed tables of."""
        return self.replicates[0]

    @property
    def stages(self) -> list[str]:
        """The stages every replicate has, in report order."""
        return [s for s in STAGES if all(s in rep.metrics for rep in self.replicates)]

    @property
    def has_control(self) -> bool:
        return self.first.has_control


def load_replicates(name: str, description: dict[str, Any],
                    replicate_dirs: list[dict[str, Path]]) -> ReplicatedExperiment:
    """Read every replicate's stage folders (`replicate_dirs[r]` as `load_experiment` takes them)."""
    if not replicate_dirs:
        raise ArtifactError(f"experiment {name!r}: no replicate folders given; expected at least replicate 0")
    expected = description.get("replicates", 1)
    if expected != len(replicate_dirs):
        raise ArtifactError(
            f"experiment {name!r}: the description says replicates: {expected!r}, but folders of "
            f"{len(replicate_dirs)} replicate(s) were given"
        )
    return ReplicatedExperiment(name, description,
                                [load_experiment(name, description, dirs) for dirs in replicate_dirs])


# --------------------------------------------------------------------------- single files


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """Read a stage's per-epoch table; every column except ``stage`` must be numeric."""
    path = Path(path)
    _require_file(path, "the per-epoch training history written by the training step")
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: cannot be read as a CSV table ({err}); expected one row per epoch") from None
    for column in ("epoch", "loss_total"):
        if column not in df.columns:
            raise ArtifactError(
                f"{path}: missing column {column!r}; expected at least epoch and loss_total, "
                f"found {', '.join(map(str, df.columns)) or 'no columns'}"
            )
    if df.empty:
        raise ArtifactError(f"{path}: has no rows; expected one row per trained epoch")
    for column in df.columns:
        if column == "stage":
            continue
        if not pd.api.types.is_numeric_dtype(df[column]):
            raise ArtifactError(f"{path}: column {column!r} must be numeric (NaN where not measured)")
    epochs = df["epoch"]
    if epochs.isna().any() or (epochs < 1).any() or (epochs % 1 != 0).any():
        raise ArtifactError(f"{path}: column 'epoch' must hold whole numbers >= 1 (1-based within the stage)")
    df = df.astype({"epoch": int}).sort_values("epoch", kind="stable").reset_index(drop=True)
    if df["epoch"].duplicated().any():
        raise ArtifactError(f"{path}: column 'epoch' repeats an epoch; expected one row per epoch")
    return df


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Read a stage's final evaluation: R-k, mAP, mINP and the CMC curve, all fractions."""
    path = Path(path)
    data = _read_json(path, "the evaluation metrics written by the evaluation step")
    for key in ("R1", "mAP", "mINP", "cmc"):
        if key not in data:
            raise ArtifactError(f"{path}: missing key {key!r}; expected R1, R5, R10, mAP, mINP and cmc")
    for key in METRIC_KEYS:
        if key in data:
            _fraction(data[key], path, key)
    cmc = data["cmc"]
    if not isinstance(cmc, list) or not cmc:
        raise ArtifactError(f"{path}: 'cmc' must be a non-empty list of fractions (rank 1 first)")
    for i, v in enumerate(cmc):
        _fraction(v, path, f"cmc[{i}]")
    return data


def read_anchors(path: str | os.PathLike) -> dict[str, Any]:
    """Read a stage's anchor diagnostics: mean distance to the own and to the nearest other anchor."""
    path = Path(path)
    data = _read_json(path, "the anchor diagnostics of the stage's final model")
    for key in ("anchor_dist_own", "anchor_dist_other"):
        if key not in data:
            raise ArtifactError(
                f"{path}: missing key {key!r}; expected anchor_dist_own, anchor_dist_other and num_identities"
            )
        v = data[key]
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            raise ArtifactError(f"{path}: {key!r} must be a finite distance >= 0, got {v!r}")
    n = data.get("num_identities")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ArtifactError(f"{path}: 'num_identities' must be a positive whole number, got {n!r}")
    return data


def read_ranking(path: str | os.PathLike) -> dict[str, Any]:
    """Read a stage's retrieval examples: each query with its top gallery images."""
    path = Path(path)
    data = _read_json(path, "the ranked retrieval examples written by the evaluation step")
    examples = data.get("examples")
    if not isinstance(examples, list):
        raise ArtifactError(f"{path}: expected a list under 'examples', got {type(examples).__name__}")
    for i, example in enumerate(examples):
        where = f"examples[{i}]"
        if not isinstance(example, dict) or not isinstance(example.get("query"), dict):
            raise ArtifactError(f"{path}: {where} must be a mapping with 'query' and 'gallery'")
        _image_entry(example["query"], path, f"{where}.query", ())
        gallery = example.get("gallery")
        if not isinstance(gallery, list):
            raise ArtifactError(f"{path}: {where}.gallery must be a list of ranked gallery images")
        for j, entry in enumerate(gallery):
            _image_entry(entry, path, f"{where}.gallery[{j}]", ("distance", "match"))
            if not isinstance(entry["match"], bool):
                raise ArtifactError(f"{path}: {where}.gallery[{j}].match must be true or false")
            if not _is_number(entry["distance"]):
                raise ArtifactError(f"{path}: {where}.gallery[{j}].distance must be a number")
    return data


def read_per_query(path: str | os.PathLike) -> pd.DataFrame:
    """Read a stage's per-query results: first true match's rank (-1: none), AP and INP per query."""
    path = Path(path)
    _require_file(path, "the per-query results written by the evaluation step")
    try:
        # Only AP and INP may be missing (empty: a query without a true match); a path never is.
        df = pd.read_csv(path, dtype={"path": str}, keep_default_na=False, na_values={"ap": [""], "inp": [""]})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: cannot be read as a CSV table ({err}); expected one row per query") from None
    missing = [c for c in PER_QUERY_COLUMNS if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(PER_QUERY_COLUMNS)}")
    if df.empty:
        raise ArtifactError(f"{path}: has no rows; expected one row per query")
    for column in ("first_rank", "ap", "inp"):
        if not pd.api.types.is_numeric_dtype(df[column]):
            raise ArtifactError(f"{path}: column {column!r} must be numeric")
    scored = df["first_rank"] >= 0
    for column in ("ap", "inp"):
        values = df.loc[scored, column]
        if values.isna().any() or (values < 0).any() or (values > 1).any():
            raise ArtifactError(f"{path}: column {column!r} must hold fractions in [0, 1] for every scored query")
    return df


# --------------------------------------------------------------------------- helpers


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ArtifactMissingError(f"{path} does not exist; expected {what}. Run the step that writes it first.")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    _require_file(path, what)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: is not valid JSON ({err}); expected {what}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fraction(v: Any, path: Path, key: str) -> None:
    if not _is_number(v) or not 0.0 <= v <= 1.0:
        raise ArtifactError(f"{path}: {key!r} must be a fraction in [0, 1], got {v!r}")


def _image_entry(entry: Any, path: Path, where: str, extra: tuple[str, ...]) -> None:
    keys = ("path", "pid", "camid", *extra)
    if not isinstance(entry, dict) or any(k not in entry for k in keys):
        raise ArtifactError(f"{path}: {where} must be a mapping with keys {', '.join(keys)}")
    if not isinstance(entry["path"], str) or not entry["path"]:
        raise ArtifactError(f"{path}: {where}.path must be a non-empty image path")
