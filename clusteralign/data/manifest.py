"""The manifest: the one table that connects dataset readers to training and evaluation.

A manifest has exactly the columns ``path, pid, camid, split, label`` in that order:

- ``path``: image path, joined onto the dataset root exactly as the root was given (a relative
  root stays relative so a workflow can read it from its working directory);
- ``pid``: original identity (never junk ``-1``; distractor ``0`` only in the gallery);
- ``camid``: camera number as written in the file name (1-based);
- ``split``: ``train``, ``query`` or ``gallery`` (none of them empty);
- ``label``: training identities relabelled ``0..N-1`` in sorted pid order, ``-1`` elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from clusteralign.data.errors import ManifestError, ManifestMissingError
from clusteralign.io import atomic_path

COLUMNS: tuple[str, ...] = ("path", "pid", "camid", "split", "label")
SPLITS: tuple[str, ...] = ("train", "query", "gallery")
INT_COLUMNS: tuple[str, ...] = ("pid", "camid", "label")
JUNK_PID = -1
DISTRACTOR_PID = 0
TEST_LABEL = -1

# How many offending rows an error message lists before summarising the rest as a count.
_MAX_LISTED = 5
_INT_TEXT = re.compile(r"^[+-]?\d{1,18}$")

Record = tuple[str, int, int]
"""One image as a reader sees it: (path, pid, camid)."""


def build_manifest(
    train: Iterable[Record], query: Iterable[Record], gallery: Iterable[Record]
) -> pd.DataFrame:
    """Build a validated manifest from (path, pid, camid) records, relabelling train pids to 0..N-1."""
    parts = {"train": list(train), "query": list(query), "gallery": list(gallery)}
    train_pids = sorted({int(pid) for _, pid, _ in parts["train"]})
    label_of = {pid: label for label, pid in enumerate(train_pids)}

    paths: list[str] = []
    pids: list[int] = []
    camids: list[int] = []
    splits: list[str] = []
    labels: list[int] = []
    for split, records in parts.items():
        for path, pid, camid in records:
            paths.append(os.fspath(path))
            pids.append(int(pid))
            camids.append(int(camid))
            splits.append(split)
            labels.append(label_of[int(pid)] if split == "train" else TEST_LABEL)

    df = pd.DataFrame(
        {
            "path": pd.Series(paths, dtype=str),
            "pid": np.asarray(pids, dtype=np.int64),
            "camid": np.asarray(camids, dtype=np.int64),
            "split": pd.Series(splits, dtype=str),
            "label": np.asarray(labels, dtype=np.int64),
        },
        columns=list(COLUMNS),
    )
    validate_manifest(df, source="build_manifest")
    return df


def validate_manifest(df: pd.DataFrame, source: str = "manifest", *, first_line: int | None = None) -> None:
    """Check a manifest table against the contract; raise ManifestError naming the column and rows.

    ``source`` names the table in messages (a file name, usually). ``first_line`` is the file line
    of the first data row, so messages can point at CSV lines as well as row numbers.
    """
    if list(df.columns) != list(COLUMNS):
        raise ManifestError(
            f"{source}: manifest columns are {list(df.columns)}, expected exactly {list(COLUMNS)} in that order."
        )
    for column in INT_COLUMNS:
        if not pd.api.types.is_integer_dtype(df[column].dtype):
            raise ManifestError(
                f"{source}: column {column!r} has dtype {df[column].dtype}, expected integers."
            )
    for column in ("path", "split"):
        values = df[column]
        is_text = values.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        _fail_rows(source, first_line, df, ~is_text, column, "expected a text value")

    _fail_rows(
        source,
        first_line,
        df,
        (df["path"].str.len() == 0).to_numpy(),
        "path",
        "expected a non-empty image path",
    )
    duplicated = df.duplicated(subset=["path", "split"], keep="first").to_numpy()
    _fail_rows(source, first_line, df, duplicated, "path", "the same image is listed twice in one split")

    split = df["split"]
    _fail_rows(
        source, first_line, df, ~split.isin(SPLITS).to_numpy(), "split", f"expected one of {list(SPLITS)}"
    )
    pid = df["pid"].to_numpy()
    camid = df["camid"].to_numpy()
    label = df["label"].to_numpy()
    is_train = (split == "train").to_numpy()
    is_gallery = (split == "gallery").to_numpy()

    _fail_rows(
        source,
        first_line,
        df,
        pid < 0,
        "pid",
        f"expected a non-negative identity (junk images, pid {JUNK_PID}, must be dropped before the manifest)",
    )
    _fail_rows(
        source,
        first_line,
        df,
        (pid == DISTRACTOR_PID) & ~is_gallery,
        "pid",
        f"distractors (pid {DISTRACTOR_PID}) may only appear in the gallery split",
    )
    _fail_rows(
        source, first_line, df, camid < 1, "camid", "expected a camera number >= 1 (camera ids are 1-based)"
    )
    _fail_rows(
        source,
        first_line,
        df,
        ~is_train & (label != TEST_LABEL),
        "label",
        f"query and gallery rows must have label {TEST_LABEL}",
    )

    for name in SPLITS:
        if not (split == name).any():
            raise ManifestError(
                f"{source}: the {name!r} split has no rows; every manifest needs train, query and gallery images."
            )

    _check_train_labels(source, first_line, df, pid[is_train], label[is_train], np.flatnonzero(is_train))
    _check_some_query_has_a_match(source, df)


def _check_some_query_has_a_match(source: str, df: pd.DataFrame) -> None:
    # Else every evaluation fails, and training would find out only at its first validation.
    query = df.loc[df["split"] == "query", ["pid", "camid"]]
    gallery = df.loc[df["split"] == "gallery", ["pid", "camid"]]
    per_pid = gallery.groupby("pid").size()
    per_pid_cam = gallery.groupby(["pid", "camid"]).size()
    same_pid = per_pid.reindex(query["pid"]).fillna(0).to_numpy()
    same_cam = per_pid_cam.reindex(pd.MultiIndex.from_frame(query)).fillna(0).to_numpy()
    if not (same_pid > same_cam).any():
        raise ManifestError(
            f"{source}: none of the {len(query)} query images has a gallery image of its identity from another "
            "camera, so no query can be evaluated (Market-1501 protocol). Check that query and gallery share "
            "identities (pid) and that camera ids (camid) are read from the file names."
        )


def _check_train_labels(
    source: str,
    first_line: int | None,
    df: pd.DataFrame,
    pid: np.ndarray,
    label: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Train labels must lie in 0..N-1 with one label per pid and one pid per label (hence all used)."""
    num_ids = len(np.unique(pid))
    out_of_range = (label < 0) | (label >= num_ids)
    if out_of_range.any():
        mask = np.zeros(len(df), dtype=bool)
        mask[rows[out_of_range]] = True
        _fail_rows(
            source,
            first_line,
            df,
            mask,
            "label",
            f"train labels must lie in 0..{num_ids - 1} ({num_ids} training identities)",
        )
    pairs = pd.DataFrame({"pid": pid, "label": label}).drop_duplicates()
    for key, other in (("pid", "label"), ("label", "pid")):
        counts = pairs.groupby(key)[other].nunique()
        clash = counts[counts > 1]
        if len(clash):
            value = clash.index[0]
            seen = sorted(pairs.loc[pairs[key] == value, other].tolist())
            raise ManifestError(
                f"{source}: train {key} {value} maps to several {other}s {seen[:_MAX_LISTED]}; "
                "every training identity needs exactly one label and every label exactly one identity."
            )


def _fail_rows(
    source: str, first_line: int | None, df: pd.DataFrame, mask: np.ndarray, column: str, expected: str
) -> None:
    """Raise ManifestError listing the first offending rows of ``column`` when ``mask`` selects any."""
    bad = np.flatnonzero(mask)
    if not len(bad):
        return
    shown = []
    for row in bad[:_MAX_LISTED]:
        where = f"row {row}" if first_line is None else f"row {row} (line {first_line + row})"
        value = df[column].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        image = df["path"].iloc[row] if "path" in df.columns else None
        if column != "path" and isinstance(image, str):
            where += f" [{image}]"
        shown.append(f"{where}: {column}={value!r}")
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    raise ManifestError(f"{source}: bad value in column {column!r} — {expected}; {'; '.join(shown)}{more}.")


def train_label_pids(df: pd.DataFrame) -> list[int]:
    """The identity (pid) of each training label 0, 1, ...: a classifier's row order."""
    train = df[df["split"] == "train"]
    return train.drop_duplicates("label").sort_values("label")["pid"].astype(int).tolist()


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Validate ``df`` and write it as CSV atomically (temporary file in the same folder, then rename)."""
    validate_manifest(df, source=os.fspath(path))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a manifest CSV; errors name the file and the offending column and rows."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        what = "is a folder" if os.path.isdir(source) else "does not exist"
        raise ManifestMissingError(
            f"manifest {source!r} {what}; expected a CSV file with columns {list(COLUMNS)} "
            "as written by the dataset preparation step."
        )
    try:
        # Read everything as text first so bad numbers can be reported by row instead of as a parse crash.
        raw = pd.read_csv(source, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError as exc:
        raise ManifestError(
            f"manifest {source!r} is empty; expected a header line {','.join(COLUMNS)} and rows."
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {source!r} is not a readable CSV file ({exc}).") from exc

    missing = [c for c in COLUMNS if c not in raw.columns]
    extra = [c for c in raw.columns if c not in COLUMNS]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if extra:
            problems.append(f"unexpected {extra}")
        raise ManifestError(
            f"manifest {source!r} has the wrong columns ({', '.join(problems)}); expected exactly {list(COLUMNS)}."
        )

    # Data rows start on line 2, after the header.
    first_line = 2
    df = raw[list(COLUMNS)].copy()
    for column in INT_COLUMNS:
        text = df[column].str.strip()
        bad = ~text.str.fullmatch(_INT_TEXT.pattern).to_numpy(dtype=bool)
        _fail_rows(source, first_line, df, bad, column, "expected an integer")
        df[column] = text.astype(np.int64)
    df["path"] = df["path"].astype(str)
    df["split"] = df["split"].astype(str)
    validate_manifest(df, source=source, first_line=first_line)
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per split (train, query, gallery): identities (distractors excluded), images, cameras, distractor images."""
    rows = []
    for name in SPLITS:
        part = df[df["split"] == name]
        real = part[part["pid"] != DISTRACTOR_PID]
        rows.append(
            {
                "identities": int(real["pid"].nunique()),
                "images": len(part),
                "cameras": int(part["camid"].nunique()),
                "distractors": int((part["pid"] == DISTRACTOR_PID).sum()),
            }
        )
    return pd.DataFrame(rows, index=pd.Index(SPLITS, name="split"))


def log_summary(df: pd.DataFrame, logger: logging.Logger, name: str) -> None:
    """Log the per-split summary table of a manifest at INFO level."""
    logger.info("%s: %d images\n%s", name, len(df), summarize(df).to_string())
