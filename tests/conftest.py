"""Shared fixtures: the tiny synthetic dataset and its manifest, generated once per session."""

from __future__ import annotations

import os

import pytest

# One thread: the test models are tiny, and OpenMP barriers degrade badly (100x seen here)
# when a second busy process shares the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """(root, manifest) of SyntheticSpec.tiny(), in the Market-1501 layout."""
    from clusteralign.data.readers import read_dataset
    from clusteralign.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    spec = SyntheticSpec.tiny()
    generate_synthetic(root, spec)
    return root, read_dataset("synthetic", root, num_cameras=spec.num_cameras)
