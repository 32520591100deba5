"""A format-neutral table model, rendered alike into HTML and Markdown, and its cell formats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DASH = "\u2014"
DELTA = "\u0394"
MINUS = "\u2212"
PLUS_MINUS = "\u00b1"


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and, for deltas, the sign class that colours it in HTML."""

    text: str
    tone: str = ""  # "pos", "neg" or "" (neutral)


@dataclass(frozen=True)
class Table:
    """A table rendered identically (up to markup) into HTML and Markdown."""

    header: list[str]
    rows: list[list[Cell]]
    numeric_from: int = 1  # columns at and after this index are right-aligned


def cell(text: Any) -> Cell:
    """A neutral cell showing `text`."""
    return Cell(str(text))


def percent(v: float | None) -> str:
    """A fraction as a percentage with one decimal; a dash when missing."""
    return DASH if v is None else f"{100.0 * v:.1f}"


def percent_spread(mean: float, sd: float) -> str:
    """Mean \u00b1 standard deviation of fractions, in percent (the mean alone for one value)."""
    return percent(mean) if not math.isfinite(sd) else f"{100.0 * mean:.1f} {PLUS_MINUS} {100.0 * sd:.1f}"


def delta_cell(d: float | None, higher_is_better: bool | None = True, fmt: str = "+.1f") -> Cell:
    """A signed delta, coloured by whether the *displayed* value is better or worse (None: never coloured)."""
    if d is None or not math.isfinite(d):
        return Cell(DASH)
    text = format(d, fmt)
    if float(text) == 0.0:
        return Cell(text.lstrip("+-"))
    if higher_is_better is None:
        return Cell(text)
    better = (float(text) > 0) == higher_is_better
    return Cell(text, "pos" if better else "neg")
