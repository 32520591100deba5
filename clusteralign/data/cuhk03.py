"""CUHK03 in the new 767/700 protocol, from the image-folder release (CUHK03-NP) or the raw release.

CUHK03-NP layout: ``<root>/{labeled,detected}/{bounding_box_train,query,bounding_box_test}/`` with
Market-style names such as ``0001_c1_1.png`` (two cameras, PNG images).

Raw layout: ``<root>/cuhk03_release/cuhk-03.mat`` (MATLAB v7.3, i.e. HDF5) plus the split files
``cuhk03_new_protocol_config_labeled.mat`` and ``cuhk03_new_protocol_config_detected.mat``
(old-style MATLAB files). ``cuhk-03.mat`` holds, per variant (``labeled`` hand-drawn boxes,
``detected`` DPM boxes), a cell array of 5 camera pairs; each pair is a persons x 10 cell array
of images (columns 1-5 from the pair's first camera, 6-10 from the second; some cells are empty).
MATLAB writes arrays column-major, so HDF5 sees every array transposed: an H x W x 3 image is
stored as 3 x W x H. A split file lists every image of its variant in ``filelist`` as
``<pair>_<person:03d>_<view>_<image:02d>.png`` (all 1-based) with its identity in ``labels`` and the
1-based positions of the train, query and gallery images in ``train_idx``, ``query_idx`` and
``gallery_idx``. ``convert_cuhk03_raw`` writes the images out once as PNG in the CUHK03-NP layout
(one folder per split, named ``PPPP_cC_N.png`` with N the image's 1-based position in
``filelist``); ``read_cuhk03_raw`` then reads that folder into a manifest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from clusteralign.data.errors import Cuhk03RawError, DatasetError, DatasetRootMissingError
from clusteralign.data.layout import FileNamePattern, read_market_layout
from clusteralign.io import file_sha256, install_folder, write_json

logger = logging.getLogger(__name__)

NUM_CAMERAS = 2
VARIANTS: tuple[str, ...] = ("labeled", "detected")

# "0001_c1_1.png": identity, camera, image index.
CUHK03_NP_PATTERN = FileNamePattern(
    regex=re.compile(r"(?P<pid>-1|\d+)_c(?P<camid>\d+)_\d+\.(?:png|jpe?g)", re.IGNORECASE),
    template="PPPP_cC_N.png",
    example="0001_c1_1.png",
)


def read_cuhk03_np(
    root: str | os.PathLike[str],
    *,
    variant: str = "labeled",
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read one variant ("labeled" hand-drawn or "detected" DPM boxes) of the CUHK03-NP folder into a manifest."""
    if variant not in VARIANTS:
        raise DatasetError(f"CUHK03-NP: unknown variant {variant!r}; expected one of {list(VARIANTS)}.")
    root_text = os.fspath(root)
    layout = "labeled/ and detected/, each holding bounding_box_train/, query/ and bounding_box_test/"
    if not os.path.isdir(root_text):
        what = "is a file, not a folder" if os.path.exists(root_text) else "does not exist"
        raise DatasetRootMissingError(
            f"CUHK03-NP: dataset root {root_text!r} {what}; expected a folder containing {layout}."
        )
    variant_root = os.path.join(root_text, variant)
    if not os.path.isdir(variant_root):
        with os.scandir(root_text) as entries:
            present = sorted(entry.name + "/" for entry in entries if entry.is_dir())
        raise DatasetRootMissingError(
            f"CUHK03-NP: {variant_root!r} does not exist (folders present in {root_text!r}: {present or 'none'}); "
            f"expected {layout}."
        )
    return read_market_layout(
        variant_root,
        name=f"CUHK03-NP {variant}",
        pattern=CUHK03_NP_PATTERN,
        num_cameras=NUM_CAMERAS,
        verify_images=verify_images,
        drop_bad=drop_bad,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------- raw release (cuhk-03.mat)

RAW_RELEASE_DIR = "cuhk03_release"
RAW_MAT_NAME = "cuhk-03.mat"
PROTOCOL_FILES: dict[str, str] = {
    "labeled": "cuhk03_new_protocol_config_labeled.mat",
    "detected": "cuhk03_new_protocol_config_detected.mat",
}
CONVERTED_DIR = "images_new_protocol"
"""Default folder (inside the raw root) that the converted CUHK03-NP layout is written to."""
CONVERSION_MARKER = ".clusteralign-cuhk03.json"
CONVERTER_VERSION = 1
PROTOCOL_FIELDS: tuple[str, ...] = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")
SPLIT_FIELDS: dict[str, str] = {"train": "train_idx", "query": "query_idx", "gallery": "gallery_idx"}
SPLIT_DIRS: dict[str, str] = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

# "1_001_1_01.png": camera pair, person within the pair, view (camera 1 or 2), image (1-10).
FILELIST_NAME = re.compile(r"(?P<pair>\d+)_(?P<person>\d+)_(?P<view>[12])_(?P<image>\d+)\.png")


@dataclass(frozen=True)
class NewProtocolSplit:
    """One variant's 767/700 split, read from a ``cuhk03_new_protocol_config_*.mat`` file.

    ``names``, ``pids`` and ``camids`` run over ``filelist``; ``indices`` maps ``train``,
    ``query`` and ``gallery`` to 0-based positions in it.
    """

    path: str
    names: tuple[str, ...]
    pids: tuple[int, ...]
    camids: tuple[int, ...]
    indices: dict[str, tuple[int, ...]]

    def counts(self) -> dict[str, list[int]]:
        """Per split: [identities, images]."""
        return {
            split: [len({self.pids[i] for i in rows}), len(rows)] for split, rows in self.indices.items()
        }


def read_new_protocol(path: str | os.PathLike[str]) -> NewProtocolSplit:
    """Read a new-protocol split file (old-style MATLAB, via scipy); errors name the file and field."""
    from scipy.io import loadmat

    source = os.fspath(path)
    if not os.path.isfile(source):
        raise DatasetRootMissingError(f"CUHK03 split file {source!r} does not exist.")
    try:
        data = loadmat(source)
    except NotImplementedError as err:
        raise Cuhk03RawError(
            f"{source!r} is a MATLAB v7.3 file, but the CUHK03 new-protocol split files are old-style MATLAB files; "
            "check that this is the right file."
        ) from err
    except Exception as err:  # noqa: BLE001 - scipy reports unreadable files with many exception types
        raise Cuhk03RawError(f"cannot read CUHK03 split file {source!r}: {type(err).__name__}: {err}.") from err
    missing = [field for field in PROTOCOL_FIELDS if field not in data]
    if missing:
        present = sorted(k for k in data if not k.startswith("__"))
        raise Cuhk03RawError(
            f"CUHK03 split file {source!r} lacks the field(s) {missing}; expected {list(PROTOCOL_FIELDS)} "
            f"(found {present})."
        )
    names = tuple(_cell_text(item) for item in np.asarray(data["filelist"], dtype=object).ravel())
    bad = [name for name in names if FILELIST_NAME.fullmatch(name) is None]
    if bad:
        raise Cuhk03RawError(
            f"CUHK03 split file {source!r}: {len(bad)} filelist entr(ies) are not named like 1_001_1_01.png "
            f"(pair_person_view_image.png): {bad[:5]}."
        )
    pids = _integers(data["labels"], "labels", source)
    if len(pids) != len(names):
        raise Cuhk03RawError(
            f"CUHK03 split file {source!r}: labels has {len(pids)} entries but filelist has {len(names)}; "
            "expected one identity per image."
        )
    if len(pids) and pids.min() < 1:
        raise Cuhk03RawError(f"CUHK03 split file {source!r}: labels must be identities >= 1, found {pids.min()}.")
    camids = np.array([int(FILELIST_NAME.fullmatch(n).group("view")) for n in names], dtype=np.int64)
    if "camId" in data:
        listed = _integers(data["camId"], "camId", source)
        if len(listed) == len(camids) and (listed != camids).any():
            # The camera in the file name is what the published results use; a disagreeing camId is only reported.
            logger.warning(
                "%s: camId differs from the view in the file name for %d image(s); using the file name.",
                source, int((listed != camids).sum()),
            )
    indices: dict[str, tuple[int, ...]] = {}
    for split, field in SPLIT_FIELDS.items():
        rows = _integers(data[field], field, source) - 1
        out_of_range = rows[(rows < 0) | (rows >= len(names))]
        if len(out_of_range):
            raise Cuhk03RawError(
                f"CUHK03 split file {source!r}: {field} holds {len(out_of_range)} position(s) outside 1..{len(names)} "
                f"(e.g. {int(out_of_range[0]) + 1}); expected 1-based positions in filelist."
            )
        if len(np.unique(rows)) != len(rows):
            raise Cuhk03RawError(f"CUHK03 split file {source!r}: {field} lists an image more than once.")
        if not len(rows):
            raise Cuhk03RawError(f"CUHK03 split file {source!r}: {field} is empty.")
        indices[split] = tuple(int(r) for r in rows)
    return NewProtocolSplit(source, names, tuple(int(p) for p in pids), tuple(int(c) for c in camids), indices)


def _cell_text(item: Any) -> str:
    """The string in one cell of a MATLAB cell array of strings (nested in 1-element arrays by scipy)."""
    while isinstance(item, np.ndarray):
        item = item.ravel()[0] if item.size else ""
    return str(item).strip()


def _integers(value: Any, field: str, source: str) -> np.ndarray:
    """A MATLAB numeric array (often stored as double) as a flat int64 array, refusing non-integers."""
    array = np.asarray(value).ravel()
    if not np.issubdtype(array.dtype, np.number):
        raise Cuhk03RawError(f"CUHK03 split file {source!r}: {field} must be numeric, got {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise Cuhk03RawError(f"CUHK03 split file {source!r}: {field} must hold whole numbers.")
    return array.astype(np.int64)


def locate_raw_files(
    root: str | os.PathLike[str], variant: str, protocol_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Find ``cuhk-03.mat`` and the variant's split file under ``root`` (or ``protocol_dir``)."""
    _check_variant(variant)
    root = Path(root)
    layout = (
        f"{RAW_RELEASE_DIR}/{RAW_MAT_NAME} and the split files {PROTOCOL_FILES['labeled']} and "
        f"{PROTOCOL_FILES['detected']} beside {RAW_RELEASE_DIR}/ (or in the configured protocol_dir)"
    )
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetRootMissingError(f"CUHK03: raw dataset root {str(root)!r} {what}; expected a folder with {layout}.")
    mat_candidates = [root / RAW_RELEASE_DIR / RAW_MAT_NAME, root / RAW_MAT_NAME]
    mat = next((p for p in mat_candidates if p.is_file()), None)
    if mat is None:
        raise DatasetRootMissingError(
            f"CUHK03: no {RAW_MAT_NAME} under {str(root)!r} (looked for {[str(p) for p in mat_candidates]}); "
            f"expected {layout}."
        )
    name = PROTOCOL_FILES[variant]
    folders = [Path(protocol_dir)] if protocol_dir is not None else [root, root / RAW_RELEASE_DIR]
    protocol = next((folder / name for folder in folders if (folder / name).is_file()), None)
    if protocol is None:
        raise DatasetRootMissingError(
            f"CUHK03: the {variant} split file {name} is not in {[str(f) for f in folders]}; it comes with the "
            f"re-ranking code of Zhong et al. (CVPR 2017), see docs/datasets.md. Expected {layout}."
        )
    return mat, protocol


def convert_cuhk03_raw(
    root: str | os.PathLike[str],
    *,
    variant: str = "labeled",
    images_dir: str | os.PathLike[str] | None = None,
    protocol_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write one variant of the raw release as PNG images in the CUHK03-NP layout; return that folder.

    The output is ``<images_dir>/<variant>/{bounding_box_train,query,bounding_box_test}/`` with
    ``images_dir`` defaulting to ``<root>/images_new_protocol``. It is written into a temporary
    sibling and renamed into place, with a marker recording the sources (size and modification
    time of ``cuhk-03.mat``, sha256 of the split file); while they are unchanged, later calls
    write nothing. A folder that lacks the marker is never replaced.
    """
    mat_path, protocol_path = locate_raw_files(root, variant, protocol_dir)
    images_root = Path(images_dir) if images_dir is not None else Path(root) / CONVERTED_DIR
    out = images_root / variant
    split = read_new_protocol(protocol_path)
    record = {
        "converter": CONVERTER_VERSION,
        "variant": variant,
        "mat": {"name": mat_path.name, **_file_identity(mat_path)},
        "protocol": {"name": protocol_path.name, "sha256": file_sha256(protocol_path)},
        "counts": split.counts(),
    }
    marker = _read_conversion_marker(out)
    if marker == record:
        _check_complete(out, split)
        logger.info("CUHK03 %s: %s is already converted; nothing to do.", variant, out)
        return out
    if out.exists() and marker is None and (not out.is_dir() or any(out.iterdir())):
        raise Cuhk03RawError(
            f"CUHK03: {str(out)!r} exists but has no {CONVERSION_MARKER}, so it was not written by this converter; "
            "refusing to replace it. Remove it or configure another images_dir."
        )
    images_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{variant}.converting-", dir=images_root))
    try:
        os.chmod(tmp, 0o755)
        logger.info("CUHK03 %s: writing %d images from %s to %s", variant, len(split.names), mat_path, out)
        write_new_protocol_images(mat_path, variant, split, tmp)
        # Written last: its presence means every image before it was written.
        write_json(tmp / CONVERSION_MARKER, record)
        install_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_new_protocol_images(
    mat_path: str | os.PathLike[str],
    variant: str,
    split: NewProtocolSplit,
    out: str | os.PathLike[str],
    num_workers: int = 2,
) -> None:
    """Decode the split's images from ``cuhk-03.mat`` and write them as PNG into ``out``'s split folders.

    HDF5 reads stay in the calling thread; PNG encoding (which releases the GIL) runs in
    ``num_workers`` threads.
    """
    import h5py

    source = os.fspath(mat_path)
    try:
        mat = h5py.File(source, "r")
    except OSError as err:
        raise Cuhk03RawError(
            f"cannot open {source!r} as a MATLAB v7.3 (HDF5) file ({err}); expected the {RAW_MAT_NAME} of the "
            f"CUHK03 release ({RAW_RELEASE_DIR}.zip)."
        ) from err
    with mat:
        if variant not in mat:
            raise Cuhk03RawError(f"{source!r} has no {variant!r} entry; found {sorted(mat.keys())}.")
        pairs = [_deref(mat, ref, source, f"{variant} camera pair {k + 1}").T
                 for k, ref in enumerate(np.asarray(mat[variant]).ravel())]
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            pending: list[Future[None]] = []
            for split_name, rows in split.indices.items():
                folder = Path(out) / SPLIT_DIRS[split_name]
                folder.mkdir(parents=True, exist_ok=True)
                for row in rows:
                    pixels = _cell_image(mat, pairs, split.names[row], source, variant)
                    file_name = f"{split.pids[row]:04d}_c{split.camids[row]}_{row + 1}.png"
                    pending.append(pool.submit(_save_png, pixels, folder / file_name))
                    if len(pending) >= _MAX_PENDING:
                        _finish(pending)
            _finish(pending)


_MAX_PENDING = 64  # images decoded but not yet written: bounds memory, keeps the workers busy


def _save_png(pixels: np.ndarray, path: Path) -> None:
    # Level 1: about 4x faster than the default for ~15% larger files; PNG stays lossless.
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG", compress_level=1)


def _finish(pending: list[Future[None]]) -> None:
    """Wait for the queued writes (re-raising the first failure) and clear the queue."""
    try:
        for future in pending:
            future.result()
    finally:
        for future in pending:
            future.cancel()
        pending.clear()


def _deref(mat: Any, ref: Any, source: str, what: str) -> np.ndarray:
    """Read the array an HDF5 object reference points to."""
    try:
        return np.asarray(mat[ref])
    except (ValueError, KeyError, TypeError) as err:
        raise Cuhk03RawError(f"{source!r}: cannot follow the reference for {what} ({err}).") from err


def _cell_image(mat: Any, pairs: list[np.ndarray], name: str, source: str, variant: str) -> np.ndarray:
    """The H x W x 3 uint8 image that a filelist name points to."""
    fields = FILELIST_NAME.fullmatch(name)
    pair, person, image = (int(fields.group(k)) for k in ("pair", "person", "image"))
    where = f"{variant} image {name} (camera pair {pair}, person {person}, image {image})"
    if not 1 <= pair <= len(pairs) or not 1 <= person <= pairs[pair - 1].shape[0] \
            or not 1 <= image <= pairs[pair - 1].shape[1]:
        shapes = [tuple(p.shape) for p in pairs]
        raise Cuhk03RawError(
            f"{source!r} has no {where}: its {variant} camera pairs hold persons x images cells of sizes {shapes}."
        )
    stored = mat[pairs[pair - 1][person - 1, image - 1]]
    pixels = np.asarray(stored).T
    if stored.attrs.get("MATLAB_empty") or pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.size == 0:
        raise Cuhk03RawError(
            f"{source!r}: the split file lists {where}, but that cell is empty or not an H x W x 3 image "
            f"(stored shape {tuple(stored.shape)}); the split file does not belong to this {RAW_MAT_NAME}."
        )
    if pixels.dtype != np.uint8:
        raise Cuhk03RawError(f"{source!r}: {where} has pixel type {pixels.dtype}, expected uint8.")
    return np.ascontiguousarray(pixels)


def _file_identity(path: Path) -> dict[str, int]:
    info = path.stat()
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _read_conversion_marker(out: Path) -> dict[str, Any] | None:
    path = out / CONVERSION_MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_complete(out: Path, split: NewProtocolSplit) -> None:
    """Cheap check that nobody removed or added images since the conversion."""
    for split_name, rows in split.indices.items():
        folder = out / SPLIT_DIRS[split_name]
        found = sum(1 for n in os.listdir(folder) if n.endswith(".png")) if folder.is_dir() else 0
        if found != len(rows):
            raise Cuhk03RawError(
                f"CUHK03: {str(folder)!r} holds {found} PNG images but the split file lists {len(rows)} {split_name} "
                f"images: the converted folder was modified. Delete {str(out)!r} to convert it again."
            )


def read_cuhk03_raw(
    root: str | os.PathLike[str],
    *,
    variant: str = "labeled",
    images_dir: str | os.PathLike[str] | None = None,
    protocol_dir: str | os.PathLike[str] | None = None,
    verify_images: bool = False,
    drop_bad: bool = False,
    num_workers: int | None = None,
) -> pd.DataFrame:
    """Read one variant of the raw CUHK03 release in the new 767/700 protocol into a manifest.

    Converts the images once (see ``convert_cuhk03_raw``), then reads the converted folder.
    """
    _check_variant(variant)
    out = convert_cuhk03_raw(root, variant=variant, images_dir=images_dir, protocol_dir=protocol_dir)
    return read_market_layout(
        out,
        name=f"CUHK03 {variant} (new protocol, from {RAW_MAT_NAME})",
        pattern=CUHK03_NP_PATTERN,
        num_cameras=NUM_CAMERAS,
        verify_images=verify_images,
        drop_bad=drop_bad,
        num_workers=num_workers,
    )


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise DatasetError(f"CUHK03: unknown variant {variant!r}; expected one of {list(VARIANTS)}.")
