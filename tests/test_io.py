"""Reading torch files: every way a file can be wrong ends in an error naming it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clusteralign.io import UnreadableFileError, torch_load, torch_load_mapping, torch_save
from clusteralign.models.file import ModelFile
from clusteralign.pipeline.steps import evaluate_feature_file
from clusteralign.train.anchors import AnchorSet


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.pt"
    torch_save({"w": torch.arange(1000.0), "meta": {"epoch": 3}}, path)
    return path


def test_a_good_file_reads_back(good):
    assert torch.equal(torch_load(good)["w"], torch.arange(1000.0))
    assert torch_load_mapping(good, ("w",), "a test file")["meta"] == {"epoch": 3}


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_file_is_named(good, damage):
    data = good.read_bytes()
    good.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"epoch: 3\n"}[damage])
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not a readable torch file, perhaps truncated"):
        torch_load(good)


def test_a_pickled_model_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(nn.Linear(2, 2), path)  # what many ReID repositories publish
    with pytest.raises(UnreadableFileError, match=r"whole_model\.pth: holds pickled Python objects.*state_dict\(\)"):
        torch_load(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pt does not exist"):
        torch_load(tmp_path / "absent.pt")


def test_files_of_the_wrong_kind_say_what_they_hold(tmp_path, good):
    tensor = tmp_path / "tensor.pt"
    torch_save(torch.ones(3), tensor)
    with pytest.raises(UnreadableFileError, match=r"tensor\.pt: not a clusteralign model file .*found a Tensor"):
        ModelFile.load(tensor)
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not an anchor file \(expected keys anchors, pids, stats; "
                                                  r"found keys w, meta\)"):
        AnchorSet.load(good)
    with pytest.raises(UnreadableFileError, match=r"good\.pt: not a feature file"):
        evaluate_feature_file(good, None, tmp_path / "m.json", tmp_path / "r.json")
    assert not (tmp_path / "m.json").exists()


def test_a_written_file_leaves_no_temporary_behind(tmp_path):
    torch_save({"a": torch.zeros(2)}, tmp_path / "out" / "x.pt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.pt"]
