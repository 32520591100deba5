"""Checkpoints written in the background: the state as it was when saved, errors surfaced."""

from __future__ import annotations

import pytest
import torch

from clusteralign.io import torch_load
from clusteralign.train.checkpoint import CheckpointWriter, snapshot


def test_the_file_holds_the_state_at_save_time(tmp_path):
    weights = torch.zeros(1000, 100)
    rows = [{"epoch": 1, "loss": 2.0}]
    state = {"model": {"w": weights}, "rng": [{"s": torch.arange(3)}], "history": rows, "epoch": 1}
    writer = CheckpointWriter()
    writer.save(state, tmp_path / "ck" / "last.pt")
    # Training goes on while the file is written: none of this may reach it.
    weights.add_(1)
    rows.append({"epoch": 2, "loss": 1.0})
    state["rng"][0]["s"].mul_(0)
    writer.wait()
    loaded = torch_load(tmp_path / "ck" / "last.pt")
    assert torch.equal(loaded["model"]["w"], torch.zeros(1000, 100))
    assert loaded["history"] == [{"epoch": 1, "loss": 2.0}] and loaded["epoch"] == 1
    assert torch.equal(loaded["rng"][0]["s"], torch.arange(3))
    # A second save replaces the first, after it.
    writer.save(state, tmp_path / "ck" / "last.pt")
    writer.wait()
    assert torch.equal(torch_load(tmp_path / "ck" / "last.pt")["model"]["w"], torch.ones(1000, 100))
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pt"]  # no temporary file left


def test_a_failed_write_is_raised_by_the_next_wait(tmp_path):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    writer = CheckpointWriter()
    writer.save({"w": torch.ones(2)}, tmp_path / "blocker" / "last.pt")
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # reported once


def test_snapshot_copies_tensors_and_containers():
    t = torch.ones(3)
    state = {"a": [t, (t, 1.5)], "b": "name"}
    copy = snapshot(state)
    t.zero_()
    assert torch.equal(copy["a"][0], torch.ones(3)) and torch.equal(copy["a"][1][0], torch.ones(3))
    assert isinstance(copy["a"][1], tuple) and copy["b"] == "name" and copy["a"][1][1] == 1.5
