"""The report's figures, drawn with matplotlib's Agg canvas and written as small, stable PNGs.

Figures are built on `matplotlib.figure.Figure` and rendered by an Agg canvas directly (no
pyplot), so the process-wide backend and figure registry are never touched. Each function draws
inside matplotlib's default style plus a few fixed overrides and the PNG carries no metadata,
so the same inputs give byte-identical files and the HTML report that embeds them is reproducible.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, UnidentifiedImageError

from ..config import ReportConfig
from ..io import atomic_path
from .artifacts import CONTROL, RANKING_FILE, STAGE_LABELS, ArtifactError, ArtifactMissingError, ExperimentArtifacts

DPI = 100
CMC_MAX_RANK = 20

# Keys of `make_figures`' result; page.py places the figures by these names.
LEARNING_CURVES = "learning_curves"
CMC = "cmc"
ANCHORS = "anchors"
RETRIEVAL = {"stage1": "retrieval_stage1", "stage2": "retrieval_stage2"}
FIGURE_KEYS: tuple[str, ...] = (LEARNING_CURVES, CMC, ANCHORS, *RETRIEVAL.values())

_STAGE_COLORS = {"stage1": "#4c72b0", "stage2": "#dd8452", CONTROL: "#7f7f7f"}
# The control is a reference, not a result: dashed and lighter wherever it is drawn.
_CONTROL_LINE = {"linestyle": "--", "alpha": 0.55}
_MATCH_RGB = {True: (34, 160, 60), False: (210, 40, 40)}
_QUERY_RGB = (40, 90, 200)
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": DPI,
}


@contextmanager
def _style() -> Iterator[None]:
    # A user's matplotlibrc must not change the report's bytes.
    with matplotlib.style.context("default"), matplotlib.rc_context(_STYLE):
        yield


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.set_dpi(DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    # Written by PIL as RGB without any text chunk: the background is opaque, so the alpha
    # channel only costs bytes, and no matplotlib version string ends up in the file.
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    with atomic_path(path) as tmp:
        image.convert("RGB").save(tmp, format="PNG")
    return path


def _stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage)


# --------------------------------------------------------------------------- learning curves


def _epoch_offsets(exp: ExperimentArtifacts) -> dict[str, int]:
    # Stage 2 and its control both start from the stage-1 weights, so both continue after stage 1.
    first = int(exp.histories["stage1"]["epoch"].max()) if "stage1" in exp.histories else 0
    return {stage: 0 if stage == "stage1" else first for stage in exp.stages if stage in exp.histories}


def combined_history(exp: ExperimentArtifacts) -> pd.DataFrame:
    """All stages' histories on one epoch axis: column ``global_epoch``; stage 2 and the control follow stage 1."""
    frames = []
    for stage, offset in _epoch_offsets(exp).items():
        df = exp.histories[stage].copy()
        df["stage"] = stage
        df["global_epoch"] = df["epoch"] + offset
        frames.append(df)
    if not frames:
        raise ArtifactError(f"experiment {exp.name!r}: no stage has a training history to plot")
    return pd.concat(frames, ignore_index=True, sort=False)


def stage_boundaries(exp: ExperimentArtifacts) -> list[float]:
    """x positions (between two epochs) where a new stage starts on the combined epoch axis."""
    return [offset + 0.5 for offset in sorted(set(_epoch_offsets(exp).values())) if offset > 0]


def _has_values(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and bool(df[column].notna().any())


def _plot_by_stage(ax: Axes, df: pd.DataFrame, column: str, scale: float = 1.0, control: bool = False,
                   **style) -> None:
    # One line per stage with a shared colour: the gap at the boundary shows where stage 2 restarts.
    # With `control`, the control run is drawn too, dashed and lighter, under its own legend entry.
    label = style.pop("label", column)
    main_label, control_label = label, f"{label} (control)"
    for stage, part in df.groupby("stage", sort=False):
        if stage == CONTROL and not control:
            continue
        part = part[part[column].notna()]
        if part.empty:
            continue
        # A lone epoch draws no line segment; give it a marker so it stays visible.
        lone = {"marker": "o", "markersize": 3} if len(part) == 1 and "marker" not in style else {}
        if stage == CONTROL:
            ax.plot(part["global_epoch"], part[column] * scale, label=control_label, **{**style, **_CONTROL_LINE},
                    **lone)
            control_label = "_nolegend_"
        else:
            ax.plot(part["global_epoch"], part[column] * scale, label=main_label, **style, **lone)
            main_label = "_nolegend_"


def learning_curves(exp: ExperimentArtifacts, path: str | os.PathLike) -> Path:
    """Losses, validation mAP/R1 and anchor distances of both stages on one epoch axis.

    The control run (if any) is drawn dashed and lighter after stage 1 in the validation and
    anchor panels; its losses are left out so the loss panel stays readable.
    """
    df = combined_history(exp)
    bounds = stage_boundaries(exp)
    main = df[df["stage"] != CONTROL]
    loss_cols = [c for c in main.columns if c.startswith("loss_") and c != "loss_total" and _has_values(main, c)]
    has_val = _has_values(df, "mAP") or _has_values(df, "R1")
    has_anchor = _has_values(df, "anchor_dist_own") or bool(exp.anchors)
    n_panels = 2 + int(has_anchor)
    with _style():
        fig = Figure(figsize=(9, 2.3 * n_panels), layout="constrained")
        axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]

        ax = axes[0]
        _plot_by_stage(ax, df, "loss_total", color="black", linewidth=2, label="total")
        for i, col in enumerate(loss_cols):
            _plot_by_stage(ax, df, col, color=f"C{i}", linewidth=1.2, label=col[len("loss_"):])
        losses = main[["loss_total", *loss_cols]].to_numpy(dtype=float)
        if np.all(losses[np.isfinite(losses)] > 0):
            ax.set_yscale("log")
        ax.set_ylabel("training loss")
        follow = "stage 2 and control epochs" if exp.has_control else "stage 2 epochs"
        ax.set_title(f"{exp.name}: training history ({follow} follow stage 1's)")
        _legend_outside(ax)

        ax = axes[1]
        if has_val:
            for col, color in (("mAP", "C0"), ("R1", "C3")):
                if _has_values(df, col):
                    _plot_by_stage(ax, df, col, scale=100.0, control=True, color=color, marker="o", markersize=3,
                                   label=col)
            _legend_outside(ax)
        else:
            ax.text(0.5, 0.5, "no validation epochs", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel("validation (%)")

        if has_anchor:
            ax = axes[2]
            for col, color, label in (("anchor_dist_own", "C2", "own anchor"),
                                      ("anchor_dist_other", "C4", "nearest other anchor")):
                if _has_values(df, col):
                    _plot_by_stage(ax, df, col, control=True, color=color, marker=".", label=label)
            _final_anchor_markers(ax, exp)
            ax.set_ylabel("mean distance")
            _legend_outside(ax)

        axes[-1].set_xlabel("epoch (both stages)")
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes:
            for x in bounds:
                ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        for i, x in enumerate(bounds):
            top = axes[0].get_xaxis_transform()
            axes[0].text(x, 0.98, f"\u2190 stage {i + 1} ", transform=top, ha="right", va="top", fontsize=8, color="grey")
            after = f"stage {i + 2}" + (" / control" if exp.has_control and i == 0 else "")
            axes[0].text(x, 0.98, f" {after} \u2192", transform=top, ha="left", va="top", fontsize=8, color="grey")
        return _save(fig, path)


def _legend_outside(ax: Axes) -> None:
    # Right of the panel, so the legend never hides a curve or the stage labels.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _final_anchor_markers(ax: Axes, exp: ExperimentArtifacts) -> None:
    # anchors.json is measured on each stage's final model; mark it at the stage's last epoch.
    labelled = False
    for stage, offset in _epoch_offsets(exp).items():
        diag = exp.anchors.get(stage)
        if diag is None:
            continue
        last = offset + int(exp.histories[stage]["epoch"].max())
        faded = {"alpha": _CONTROL_LINE["alpha"]} if stage == CONTROL else {}
        for key, color in (("anchor_dist_own", "C2"), ("anchor_dist_other", "C4")):
            ax.plot([last], [diag[key]], linestyle="none", marker="D", markersize=6, markerfacecolor="none",
                    markeredgecolor=color, label="_nolegend_" if labelled else "final model", **faded)
            labelled = True


# --------------------------------------------------------------------------- CMC


def cmc_curves(exp: ExperimentArtifacts, path: str | os.PathLike, max_rank: int = CMC_MAX_RANK) -> Path:
    """Stage 1 vs stage 2 (and the dashed control) CMC curves up to rank `max_rank` (or the evaluated length)."""
    with _style():
        fig = Figure(figsize=(6, 3.6), layout="constrained")
        ax = fig.subplots()
        longest = 1
        for stage in exp.stages:
            metrics = exp.metrics.get(stage)
            if metrics is None:
                continue
            cmc = 100.0 * np.asarray(metrics["cmc"][:max_rank], dtype=float)
            ranks = np.arange(1, len(cmc) + 1)
            longest = max(longest, len(cmc))
            label = f"{_stage_label(stage)}: R1 {100 * metrics['R1']:.1f}%, mAP {100 * metrics['mAP']:.1f}%"
            # Grey already sets the control apart from the two stages; dashed says it is a reference.
            style = {"linestyle": _CONTROL_LINE["linestyle"]} if stage == CONTROL else {}
            ax.plot(ranks, cmc, marker="o", markersize=3, color=_STAGE_COLORS.get(stage), label=label, **style)
        ax.set_xlim(0.5, longest + 0.5)
        ax.set_xticks(np.unique(np.r_[1, np.arange(5, longest + 1, 5)]))
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.set_title(f"{exp.name}: CMC")
        ax.legend(loc="lower right")
        return _save(fig, path)


# --------------------------------------------------------------------------- anchors


def anchor_diagnostics(exp: ExperimentArtifacts, path: str | os.PathLike) -> Path:
    """Grouped bars: mean distance to the own and to the nearest other anchor, per stage."""
    stages = [s for s in exp.stages if s in exp.anchors]
    groups = (("anchor_dist_own", "own anchor"), ("anchor_dist_other", "nearest other anchor"))
    width = 0.8 / max(len(stages), 1)
    with _style():
        fig = Figure(figsize=(6, 3.4), layout="constrained")
        ax = fig.subplots()
        x = np.arange(len(groups))
        for i, stage in enumerate(stages):
            values = [exp.anchors[stage][key] for key, _ in groups]
            # Hatched as well as grey, so the control stays apart from the stages in greyscale prints.
            hatch = {"hatch": "//", "edgecolor": "white"} if stage == CONTROL else {}
            bars = ax.bar(x + (i - (len(stages) - 1) / 2) * width, values, width,
                          color=_STAGE_COLORS.get(stage), label=f"after {_stage_label(stage)}", **hatch)
            ax.bar_label(bars, fmt="%.3g", fontsize=8, padding=2)
        if not stages:
            ax.text(0.5, 0.5, "no anchor diagnostics", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks(x, [label for _, label in groups])
        ax.set_ylabel("mean Euclidean distance")
        # A third legend entry needs more headroom above the bars.
        ax.margins(y=0.3 if CONTROL in stages else 0.15)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{exp.name}: anchor diagnostics (training features)")
        if stages:
            ax.legend(loc="upper left")
        return _save(fig, path)


# --------------------------------------------------------------------------- retrieval


def retrieval_grid(
    exp: ExperimentArtifacts,
    stage: str,
    path: str | os.PathLike,
    max_examples: int = ReportConfig.retrieval_examples,
    top_k: int = 10,
    cell_size: tuple[int, int] = (64, 128),
) -> Path:
    """Each example query (blue frame) with its top-`top_k` gallery images, framed green if correct, red if wrong.

    `cell_size` is (width, height) in pixels; images are resized to it. The mosaic is drawn
    at one figure pixel per image pixel so the thumbnails stay sharp.
    """
    if stage not in exp.rankings:
        raise ArtifactError(
            f"experiment {exp.name!r}: no ranking for {stage!r}; stages with rankings: {', '.join(exp.rankings) or 'none'}"
        )
    source = exp.stage_dirs.get(stage, Path(stage)) / RANKING_FILE
    examples = exp.rankings[stage]["examples"][:max_examples]
    n_cols = 1 + max([min(len(e["gallery"]), top_k) for e in examples] or [0])
    w, h = cell_size
    border, gap, label_h, query_gap, title_h = 3, 4, 24, 14, 22
    cell_w, cell_h = w + 2 * border, h + 2 * border + label_h

    def col_x(c: int) -> int:
        return gap + c * (cell_w + gap) + (query_gap if c > 0 else 0)

    # Wide enough for the title even when there are few (or no) examples.
    mosaic_w = max(col_x(n_cols - 1) + cell_w + gap, 480)
    mosaic_h = title_h + len(examples) * (cell_h + gap) + gap
    mosaic = np.full((mosaic_h, mosaic_w, 3), 255, dtype=np.uint8)
    labels: list[tuple[float, float, str]] = []

    for r, example in enumerate(examples):
        y = title_h + gap + r * (cell_h + gap)
        entries = [(example["query"], _QUERY_RGB, f"query id {example['query']['pid']}",
                    f"cam {example['query']['camid']}")]
        for k, g in enumerate(example["gallery"][:top_k], start=1):
            entries.append((g, _MATCH_RGB[g["match"]], f"#{k} id {g['pid']} c{g['camid']}",
                            f"d {g['distance']:.3f}"))
        for c, (entry, rgb, line1, line2) in enumerate(entries):
            x = col_x(c)
            mosaic[y:y + h + 2 * border, x:x + cell_w] = rgb
            mosaic[y + border:y + border + h, x + border:x + border + w] = _thumbnail(entry["path"], cell_size, source)
            labels.append((x + cell_w / 2, y + h + 2 * border + 2, f"{line1}\n{line2}"))

    with _style():
        fig = Figure(figsize=(mosaic_w / DPI, mosaic_h / DPI))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_axis_off()
        for lx, ly, text in labels:
            ax.text(lx, ly, text, ha="center", va="top", fontsize=6, linespacing=1.1)
        title = f"{exp.name}, {_stage_label(stage)}: top-{top_k} retrieval (green = correct, red = wrong)"
        if not examples:
            title = f"{exp.name}, {_stage_label(stage)}: no retrieval examples"
        ax.text(gap, title_h / 2 + 1, title, ha="left", va="center", fontsize=8)
        return _save(fig, path)


def _thumbnail(image_path: str, size: tuple[int, int], source: Path) -> np.ndarray:
    p = Path(image_path)
    if not p.is_file():
        raise ArtifactMissingError(
            f"{p} does not exist; it is listed in {source}. Image paths in the ranking are relative "
            "to the workflow's working directory; run the report from there."
        )
    try:
        with Image.open(p) as img:
            return np.asarray(img.convert("RGB").resize(size, Image.Resampling.BICUBIC))
    except (UnidentifiedImageError, OSError) as err:
        raise ArtifactError(f"{p}: cannot be decoded as an image ({err}); it is listed in {source}") from None


# --------------------------------------------------------------------------- all at once


def make_figures(exp: ExperimentArtifacts, out_dir: str | os.PathLike,
                 max_examples: int = ReportConfig.retrieval_examples) -> dict[str, Path]:
    """Write every figure of `exp` into `out_dir`; returns {figure key: path} for `write_report`.

    `max_examples` caps the queries shown in each retrieval grid.
    """
    out_dir = Path(out_dir)
    paths = {
        LEARNING_CURVES: learning_curves(exp, out_dir / "learning_curves.png"),
        CMC: cmc_curves(exp, out_dir / "cmc.png"),
        ANCHORS: anchor_diagnostics(exp, out_dir / "anchors.png"),
    }
    for stage in exp.stages:
        if stage in exp.rankings and stage in RETRIEVAL:
            paths[RETRIEVAL[stage]] = retrieval_grid(exp, stage, out_dir / f"retrieval_{stage}.png",
                                                        max_examples=max_examples)
    return paths
