"""The report's words: its introduction, how-to-read notes and the figures' captions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .artifacts import STAGE_LABELS, ArtifactMissingError, ExperimentArtifacts
from .figures import ANCHORS, CMC, FIGURE_KEYS, LEARNING_CURVES, RETRIEVAL
from .stage_tables import DELTA_VS_CONTROL
from .tables import DELTA, MINUS

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


def place_figures(exp: ExperimentArtifacts, paths: dict[str, Path]) -> dict[str, PlacedFigure]:
    """Each figure file of `paths` (by figure key) with its caption; a missing file is named."""
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
