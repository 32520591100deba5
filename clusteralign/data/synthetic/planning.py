"""The plan: which images exist, in which folder, under which Market-1501 name; nothing is drawn.

Each identity appears in `min_cameras_per_id..max_cameras_per_id` distinct cameras with a number
of images in each (a test identity: one query and at least one gallery image per camera);
distractors and junk go to the gallery. File names carry camera, sequence, frame and detection
number as Market-1501's do, with frames in a shuffled visiting order so that they say nothing
about the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .cameras import Camera, make_camera
from .palette import VIEWS
from .spec import SyntheticSpecError
from .streams import K_EXTRA, K_PLAN, K_VISIT, stream

if TYPE_CHECKING:
    from .spec import SyntheticSpec

TRAIN_DIR = "bounding_box_train"
GALLERY_DIR = "bounding_box_test"
QUERY_DIR = "query"

# Image roles inside the image stream.
ROLE_ID, ROLE_DISTRACTOR, ROLE_JUNK = range(3)

_NUM_SEQUENCES = 6  # Market cameras record six sequences ("s1".."s6")

# (pid, camid, n_images, query index or -1): an identity's images in one camera.
_Visit = tuple[int, int, int, int]
# (folder, role, pid, camid, index, view, facing_left, scale): an image before it is named.
_Pending = tuple[str, int, int, int, int, int, bool, float]


@dataclass(frozen=True)
class Entry:
    """One image to render: where it goes and which random streams it uses."""

    folder: str
    name: str
    role: int
    pid: int  # person id for identities, running index for distractors/junk
    camid: int
    index: int  # image number within the (person, camera) visit
    view: int
    facing_left: bool
    scale: float


def plan(spec: SyntheticSpec) -> list[Entry]:
    """Every image of the dataset, named and assigned to a folder, without rendering it."""
    cameras = {c: make_camera(spec, c) for c in range(1, spec.num_cameras + 1)}
    return _named(spec, _pending(spec, _visits(spec), cameras))


def _visits(spec: SyntheticSpec) -> list[_Visit]:
    """Per identity, its cameras and how many images it has in each (test ids: and which is the query)."""
    train_pids = list(range(1, spec.num_train_ids + 1))
    test_pids = list(range(spec.num_train_ids + 1, spec.num_train_ids + spec.num_test_ids + 1))
    visits: list[_Visit] = []
    for pid in train_pids + test_pids:
        is_test = pid > spec.num_train_ids
        rng = stream(spec.seed, K_PLAN, pid)
        n_cams = int(rng.integers(spec.min_cameras_per_id, spec.max_cameras_per_id + 1))
        cams = sorted((rng.choice(spec.num_cameras, n_cams, replace=False) + 1).tolist())
        low = spec.min_images_per_id_per_camera
        if is_test:  # one query plus at least one gallery image per camera
            low = max(2, low)
        for camid in cams:
            n_images = int(rng.integers(low, spec.max_images_per_id_per_camera + 1))
            query = int(rng.integers(n_images)) if is_test else -1
            visits.append((pid, camid, n_images, query))
    if spec.num_train_images is not None:
        n_train = sum(1 for v in visits if v[0] <= spec.num_train_ids)
        counts = _fit_total([v[2] for v in visits[:n_train]], spec)
        visits[:n_train] = [(pid, camid, n, -1) for (pid, camid, _, _), n in zip(visits[:n_train], counts)]
    return visits


def _pending(spec: SyntheticSpec, visits: list[_Visit], cameras: dict[int, Camera]) -> list[_Pending]:
    """Every image's folder, role, viewpoint and scale, before names are assigned."""
    pending: list[_Pending] = []
    for pid, camid, n_images, query in visits:
        is_test = pid > spec.num_train_ids
        visit = stream(spec.seed, K_VISIT, pid, camid)
        # One walk past the camera: consecutive detections mostly share the viewpoint.
        view = int(visit.choice(len(VIEWS), p=cameras[camid].view_probs))
        facing_left = bool(visit.random() < 0.5)
        scale = float(cameras[camid].scale * np.exp(visit.normal(0.0, 0.05)))
        for k in range(n_images):
            v = view if visit.random() < 0.8 else int(visit.integers(len(VIEWS)))
            folder = (QUERY_DIR if k == query else GALLERY_DIR) if is_test else TRAIN_DIR
            pending.append((folder, ROLE_ID, pid, camid, k, v, facing_left, scale))
    extra = stream(spec.seed, K_EXTRA)
    for role, count in ((ROLE_DISTRACTOR, spec.num_distractors), (ROLE_JUNK, spec.num_junk)):
        for i in range(count):
            camid = int(extra.integers(1, spec.num_cameras + 1))
            view = int(extra.integers(len(VIEWS)))
            scale = float(cameras[camid].scale * np.exp(extra.normal(0.0, 0.08)))
            facing_left = bool(extra.random() < 0.5)
            pending.append((GALLERY_DIR, role, i, camid, 0, view, facing_left, scale))
    return pending


def _named(spec: SyntheticSpec, pending: list[_Pending]) -> list[Entry]:
    """The images with Market names, sorted by folder and name."""
    # Market names carry sequence, frame and detection number; frames increase within a
    # (camera, sequence) in a shuffled visiting order so they say nothing about the identity.
    names = stream(spec.seed, K_PLAN, 0)
    frames = np.zeros((spec.num_cameras + 1, _NUM_SEQUENCES + 1), dtype=np.int64)
    entries: list[Entry] = []
    order = names.permutation(len(pending))
    seq_of_visit: dict[tuple[int, int, int], int] = {}
    for i in order.tolist():
        folder, role, pid, camid, k, view, facing_left, scale = pending[i]
        key = (role, pid, camid)
        if key not in seq_of_visit:
            seq_of_visit[key] = int(names.integers(1, _NUM_SEQUENCES + 1))
        seq = seq_of_visit[key]
        frames[camid, seq] += int(names.integers(5, 120))
        if frames[camid, seq] > 999_999:
            raise SyntheticSpecError(
                f"SyntheticSpec asks for too many images per camera ({len(pending)} in all) for "
                "the six-digit frame numbers of Market-1501 names; use fewer identities, "
                "images per camera or distractors, or more cameras."
            )
        detection = int(names.choice(4, p=(0.0, 0.6, 0.3, 0.1)))
        label = {ROLE_ID: f"{pid:04d}", ROLE_DISTRACTOR: "0000", ROLE_JUNK: "-1"}[role]
        name = f"{label}_c{camid}s{seq}_{int(frames[camid, seq]):06d}_{detection:02d}.jpg"
        entries.append(Entry(folder, name, role, pid, camid, k, view, facing_left, scale))
    entries.sort(key=lambda e: (e.folder, e.name))
    return entries


def _fit_total(counts: list[int], spec: SyntheticSpec) -> list[int]:
    """Training visits' image counts changed one image at a time, at random visits, to sum to `num_train_images`."""
    low, high, target = spec.min_images_per_id_per_camera, spec.max_images_per_id_per_camera, spec.num_train_images
    assert target is not None
    if not low * len(counts) <= target <= high * len(counts):
        raise SyntheticSpecError(
            f"SyntheticSpec.num_train_images ({target}) cannot be reached: the {spec.num_train_ids} training "
            f"identities appear in {len(counts)} (identity, camera) pairs, which hold between {low * len(counts)} "
            f"and {high * len(counts)} images at {low}..{high} images per identity and camera."
        )
    counts = list(counts)
    rng = stream(spec.seed, K_PLAN, 0, 1)
    while (diff := target - sum(counts)) != 0:
        step = 1 if diff > 0 else -1
        open_visits = [i for i, c in enumerate(counts) if (c < high if step > 0 else c > low)]
        for i in rng.permutation(open_visits)[: abs(diff)].tolist():
            counts[i] += step
    return counts
