"""Helpers that write tiny fake datasets in the exact folder layouts and file names of the real ones.

Images are real (tiny) JPEG/PNG files with deterministic pixels, so readers, verification and
decoding all run on genuine files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_HW: tuple[int, int] = (8, 4)
"""Height and width of the fake dataset images: tiny keeps the tests fast."""

SPLIT_DIRS: dict[str, str] = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclass
class FakeDataset:
    """A fake dataset written to disk and what a correct reader must find in it."""

    root: Path
    # split -> (identities without distractors, images after dropping junk)
    counts: dict[str, tuple[int, int]]
    train_pids: list[int]
    test_pids: list[int]
    junk_files: list[Path] = field(default_factory=list)
    distractor_files: list[Path] = field(default_factory=list)

    def split_dir(self, split: str) -> Path:
        """The folder that holds one split's images."""
        return self.root / SPLIT_DIRS[split]


def pixels(seed: int, size: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """Deterministic H x W x 3 uint8 RGB pixels for one image."""
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def write_image(path: Path, *, seed: int = 0, size: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """Write a real image (format from the suffix) and return the RGB pixels it was made from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = pixels(seed, size)
    Image.fromarray(rgb, mode="RGB").save(path)
    return rgb


def write_truncated_jpeg(path: Path, *, seed: int = 0) -> None:
    """Write a JPEG cut off half-way: the header reads fine, the pixel data does not."""
    buffer = io.BytesIO()
    Image.fromarray(pixels(seed, (64, 32)), mode="RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])


def write_garbage(path: Path) -> None:
    """Write bytes that are no image at all under an image file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image\n" * 4)


def _pid_text(pid: int) -> str:
    """Identity as the datasets write it: four digits, or -1 for junk."""
    return "-1" if pid == -1 else f"{pid:04d}"


def market_name(pid: int, camid: int, index: int) -> str:
    """A Market-1501 file name such as 0002_c1s1_000451_03.jpg."""
    return f"{_pid_text(pid)}_c{camid}s{1 + index % 6}_{1000 + 25 * index:06d}_{index % 100:02d}.jpg"


def duke_name(pid: int, camid: int, index: int) -> str:
    """A DukeMTMC-reID file name such as 0005_c2_f0046985.jpg."""
    return f"{_pid_text(pid)}_c{camid}_f{40000 + 17 * index:07d}.jpg"


def cuhk03_np_name(pid: int, camid: int, index: int) -> str:
    """A CUHK03-NP file name such as 0001_c1_1.png."""
    return f"{_pid_text(pid)}_c{camid}_{index + 1}.png"


def write_market_style(
    root: Path,
    name: Callable[[int, int, int], str],
    *,
    train_pids: Sequence[int],
    test_pids: Sequence[int],
    num_cameras: int,
    images_per_pid: int = 3,
    junk: int = 0,
    distractors: int = 0,
    seed: int = 0,
) -> FakeDataset:
    """Write train/query/gallery folders: each train pid ``images_per_pid`` images over cameras,
    each test pid one query (camera 1) and ``images_per_pid`` gallery images on other cameras,
    plus ``junk`` (pid -1) and ``distractors`` (pid 0) gallery images and a Thumbs.db per folder."""
    counter = iter(range(seed * 100_000, seed * 100_000 + 100_000))
    dataset = FakeDataset(
        root=root,
        counts={
            "train": (len(train_pids), len(train_pids) * images_per_pid),
            "query": (len(test_pids), len(test_pids)),
            "gallery": (len(test_pids), len(test_pids) * images_per_pid + distractors),
        },
        train_pids=sorted(train_pids),
        test_pids=sorted(test_pids),
    )

    def put(split: str, pid: int, camid: int) -> Path:
        index = next(counter)
        path = dataset.split_dir(split) / name(pid, camid, index)
        write_image(path, seed=index)
        return path

    for pid in train_pids:
        for k in range(images_per_pid):
            put("train", pid, 1 + (pid + k) % num_cameras)
    for pid in test_pids:
        put("query", pid, 1)
        for k in range(images_per_pid):
            put("gallery", pid, 2 + k % max(num_cameras - 1, 1) if num_cameras > 1 else 1)
    for k in range(junk):
        dataset.junk_files.append(put("gallery", -1, 1 + k % num_cameras))
    for k in range(distractors):
        dataset.distractor_files.append(put("gallery", 0, 1 + k % num_cameras))
    for sub in SPLIT_DIRS.values():
        # Windows thumbnail caches ride along in real downloads; readers must ignore them.
        (root / sub / "Thumbs.db").write_bytes(b"\x00thumbs")
    return dataset


def make_market1501(root: Path, *, num_cameras: int = 6, junk: int = 2, distractors: int = 2) -> FakeDataset:
    """A tiny Market-1501 (also the synthetic dataset's layout), with junk and distractors in the gallery."""
    return write_market_style(
        root,
        market_name,
        train_pids=[11, 2, 7],
        test_pids=[3, 5],
        num_cameras=num_cameras,
        junk=junk,
        distractors=distractors,
    )


def make_dukemtmc(root: Path) -> FakeDataset:
    """A tiny DukeMTMC-reID: cameras up to 8, no junk or distractors."""
    return write_market_style(root, duke_name, train_pids=[5, 1, 9, 4], test_pids=[6, 8], num_cameras=8)


def make_cuhk03_np(root: Path) -> dict[str, FakeDataset]:
    """A tiny CUHK03-NP with labeled/ and detected/ variants holding different identities."""
    return {
        "labeled": write_market_style(
            root / "labeled", cuhk03_np_name, train_pids=[1, 2], test_pids=[10, 12], num_cameras=2, seed=1
        ),
        "detected": write_market_style(
            root / "detected", cuhk03_np_name, train_pids=[3, 4, 6], test_pids=[11], num_cameras=2, seed=2
        ),
    }


def zip_folder(folder: Path, archive: Path, *, arcroot: str | None = None) -> Path:
    """Pack ``folder`` into a zip whose entries sit under ``arcroot/`` (default: the folder's name), like the real releases."""
    import zipfile

    root = arcroot if arcroot is not None else folder.name
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(folder, root + "/")
        for path in sorted(folder.rglob("*")):
            zf.write(path, f"{root}/{path.relative_to(folder).as_posix()}" + ("/" if path.is_dir() else ""))
    return archive


def tar_folder(folder: Path, archive: Path, *, arcroot: str | None = None) -> Path:
    """Pack ``folder`` into a tar (compression from the suffix, e.g. .tar.gz) under ``arcroot/``."""
    import tarfile

    mode = "w:gz" if archive.name.endswith((".tar.gz", ".tgz")) else "w"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=arcroot if arcroot is not None else folder.name)
    return archive


# --------------------------------------------------------------------------- CUHK03 raw release

CUHK03_PERSONS_PER_PAIR: tuple[int, ...] = (3, 2, 2, 1, 2)
"""Persons in each of the 5 camera pairs of the fake cuhk-03.mat (the real one has 1,467 in all)."""


def cuhk03_filelist_name(pair: int, person: int, image: int) -> str:
    """The split files' name for a cell (all 1-based), e.g. 1_001_1_01.png; images 1-5 are view 1, 6-10 view 2."""
    return f"{pair}_{person:03d}_{1 if image <= 5 else 2}_{image:02d}.png"


@dataclass
class FakeCuhk03Raw:
    """A fake raw CUHK03 release and, per variant, what a correct reader must find in it."""

    root: Path
    # variant -> filelist name -> H x W x 3 pixels of that image
    pixels: dict[str, dict[str, np.ndarray]]
    # variant -> (filelist names, labels, {split: 0-based positions})
    protocol: dict[str, tuple[list[str], list[int], dict[str, list[int]]]]
    # variant -> split -> (identities, images)
    counts: dict[str, dict[str, tuple[int, int]]]
    train_pids: list[int]
    test_pids: list[int]

    def protocol_path(self, variant: str) -> Path:
        """Where the variant's new-protocol split file was written."""
        return self.root / f"cuhk03_new_protocol_config_{variant}.mat"


def _cuhk03_cells(variant: str, seed: int) -> list[list[list[np.ndarray | None]]]:
    """pair -> person -> 10 image cells (None = empty), sizes varying and never square."""
    rng = np.random.default_rng(seed)
    pairs: list[list[list[np.ndarray | None]]] = []
    for pair, persons in enumerate(CUHK03_PERSONS_PER_PAIR, start=1):
        pair_cells = []
        for person in range(1, persons + 1):
            # Real identities have 1-5 images per view; the rest of the 10 cells are empty.
            per_view = (2 + (pair + person) % 2, 2 + person % 2)
            if variant == "detected" and (pair, person) == (2, 1):
                per_view = (per_view[0] + 1, per_view[1])  # one image more than labeled, as in the real release
            cells: list[np.ndarray | None] = []
            for image in range(1, 11):
                view, k = (0, image) if image <= 5 else (1, image - 5)
                if k <= per_view[view]:
                    height, width = 9 + (pair + image) % 4, 4 + (person + image) % 3
                    cells.append(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
                else:
                    cells.append(None)
            pair_cells.append(cells)
        pairs.append(pair_cells)
    return pairs


def write_matlab_v73_cuhk03(path: Path, variants: dict[str, list[list[list[np.ndarray | None]]]]) -> None:
    """Write a cuhk-03.mat the way MATLAB's -v7.3 does: HDF5 with a 512-byte MATLAB header, each variant a
    1 x 5 cell of references to persons x 10 cells of references to images, every array stored transposed."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(1_000_000))

        def store(data: np.ndarray, matlab_class: str, *, empty: bool = False):
            dataset = refs.create_dataset(f"r{next(counter)}", data=data)
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                dataset.attrs["MATLAB_empty"] = np.uint8(1)
            return dataset.ref

        for variant, pairs in variants.items():
            pair_refs = []
            for persons in pairs:
                grid = np.empty((10, len(persons)), dtype=h5py.ref_dtype)  # MATLAB persons x 10, transposed
                for person, cells in enumerate(persons):
                    for image, pixels in enumerate(cells):
                        if pixels is None:
                            # MATLAB stores an empty cell as its dimensions [0 0] flagged MATLAB_empty.
                            grid[image, person] = store(np.zeros(2, dtype=np.uint64), "double", empty=True)
                        else:
                            grid[image, person] = store(np.ascontiguousarray(pixels.T), "uint8")
                pair_refs.append(store(grid, "cell"))
            top = f.create_dataset(variant, data=np.array([pair_refs], dtype=h5py.ref_dtype))
            top.attrs["MATLAB_class"] = np.bytes_("cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def write_protocol_mat(
    path: Path, names: Sequence[str], labels: Sequence[int], splits: dict[str, Sequence[int]],
    camids: Sequence[int] | None = None,
) -> None:
    """Write a cuhk03_new_protocol_config_*.mat (old-style MATLAB) with 1-based split positions stored as double."""
    from scipy.io import savemat

    column = lambda values: np.asarray(values, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    filelist = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        filelist[i, 0] = name
    if camids is None:
        camids = [int(name.split("_")[2]) for name in names]
    savemat(
        path,
        {
            "filelist": filelist,
            "labels": column(labels),
            "camId": column(camids),
            "train_idx": column([i + 1 for i in splits["train"]]),
            "query_idx": column([i + 1 for i in splits["query"]]),
            "gallery_idx": column([i + 1 for i in splits["gallery"]]),
        },
    )


def make_cuhk03_raw(root: Path, *, train_pids: Sequence[int] = (1, 2, 4, 7, 9)) -> FakeCuhk03Raw:
    """A tiny raw CUHK03: ``cuhk03_release/cuhk-03.mat`` plus both new-protocol split files.

    Identities are numbered 1.. over pairs and persons; ``train_pids`` train, the rest test with one
    query per (identity, camera) and the other images in the gallery, like the 767/700 protocol.
    """
    cells = {"labeled": _cuhk03_cells("labeled", 11), "detected": _cuhk03_cells("detected", 12)}
    write_matlab_v73_cuhk03(root / "cuhk03_release" / "cuhk-03.mat", cells)
    fake = FakeCuhk03Raw(root=root, pixels={}, protocol={}, counts={}, train_pids=sorted(train_pids), test_pids=[])
    for variant, pairs in cells.items():
        names: list[str] = []
        labels: list[int] = []
        pixels: dict[str, np.ndarray] = {}
        pid = 0
        for pair, persons in enumerate(pairs, start=1):
            for person, person_cells in enumerate(persons, start=1):
                pid += 1
                for image, cell in enumerate(person_cells, start=1):
                    if cell is not None:
                        name = cuhk03_filelist_name(pair, person, image)
                        names.append(name)
                        labels.append(pid)
                        pixels[name] = cell
        splits: dict[str, list[int]] = {"train": [], "query": [], "gallery": []}
        seen: set[tuple[int, int]] = set()
        for row, (name, label) in enumerate(zip(names, labels)):
            view = int(name.split("_")[2])
            if label in fake.train_pids:
                splits["train"].append(row)
            elif (label, view) not in seen:
                seen.add((label, view))
                splits["query"].append(row)
            else:
                splits["gallery"].append(row)
        write_protocol_mat(root / f"cuhk03_new_protocol_config_{variant}.mat", names, labels, splits)
        fake.pixels[variant] = pixels
        fake.protocol[variant] = (names, labels, splits)
        fake.counts[variant] = {
            split: (len({labels[r] for r in rows}), len(rows)) for split, rows in splits.items()
        }
        fake.test_pids = sorted(set(labels) - set(fake.train_pids))
    return fake


# --------------------------------------------------------------------------- MSMT17

MSMT17_TIMES: tuple[str, ...] = ("0113morning", "0113noon", "0302afternoon", "0303morning")


def msmt17_name(label: int, index: int, camid: int, frame: int) -> str:
    """An MSMT17 file name such as 0000_000_01_0303morning_0015_0.jpg (camera in the third field)."""
    return f"{label:04d}_{index:03d}_{camid:02d}_{MSMT17_TIMES[frame % 4]}_{frame:04d}_{frame % 2}.jpg"


@dataclass
class FakeMsmt17:
    """A fake MSMT17 release and what a correct reader must find in it."""

    root: Path
    # list key (train, val, query, gallery) -> [(relative path, label)] in file order
    lists: dict[str, list[tuple[str, int]]]

    def list_path(self, key: str) -> Path:
        """The list file for ``key``."""
        return self.root / f"list_{key}.txt"


def make_msmt17(root: Path, *, version: str = "V1") -> FakeMsmt17:
    """A tiny MSMT17: train labels 0-3 (label 3 only in list_val.txt), test labels 0-2, cameras up to 15.

    Images sit in one folder per label under train/ and test/ (mask_train_v2/, mask_test_v2/ for
    V2); list files hold ``<label folder>/<file name> <label>`` lines, as in the release.
    """
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "query": [], "gallery": []}
    counter = iter(range(10_000))

    def put(key: str, folder: str, label: int, camid: int) -> None:
        index = next(counter)
        relative = f"{label:04d}/{msmt17_name(label, index, camid, 15 + index)}"
        write_image(root / folder / relative, seed=500 + index)
        lists[key].append((relative, label))

    for label in range(3):
        for k in range(3):
            put("train", train_dir, label, 1 + (4 * label + 5 * k) % 15)
    put("val", train_dir, 0, 7)
    put("val", train_dir, 3, 2)
    put("val", train_dir, 3, 15)
    for label in range(3):
        put("query", test_dir, label, 3 + label)
        for k in range(2):
            put("gallery", test_dir, label, 9 + label + 3 * k)
    for key, entries in lists.items():
        (root / f"list_{key}.txt").write_text("".join(f"{path} {label}\n" for path, label in entries))
    return FakeMsmt17(root=root, lists=lists)
