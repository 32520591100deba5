"""torchrun with 2 CPU processes (gloo) trains like 1 process with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from clusteralign.config import build_experiment
from clusteralign.models.file import ModelFile
from clusteralign.train.launch import run_stage
from clusteralign.train.trainer import StageSpec

MODELS = {"tiny": {"backbone": "resnet18", "base_width": 8}}
# No random augmentation: each rank draws its own random stream, a single process one stream.
AUGMENT = {"height": 64, "width": 32, "flip_prob": 0.0, "pad": 0, "random_erasing_prob": 0.0}


def stage1(world_size: int, num_identities: int) -> dict:
    return {
        "epochs": 3,
        "num_identities": num_identities,
        "num_instances": 2,
        "augment": AUGMENT,
        "schedule": {"warmup_epochs": 1, "milestones": [2]},
        "device": "cpu",
        "num_threads": 1,
        "world_size": world_size,
        "eval_every": 3,
        # Batch-hard mining takes an argmax; where two negatives are within float rounding of each
        # other, the two summation orders can pick different ones and the runs part ways a little
        # (seed 0 on the current synthetic data: 6e-4 in epoch 2's triplet loss). Seeds 1-3 have no
        # such near-tie and agree to ~4e-6; the test uses one of them.
        "seed": 1,
    }


def run(tiny_dataset, out: Path, world_size: int, num_identities: int) -> pd.DataFrame:
    exp = build_experiment("d", {"dataset": "s", "model": "tiny", "stage1": stage1(world_size, num_identities)},
                           MODELS)
    spec = StageSpec("stage1", tiny_dataset[1], exp.model, exp.stage1, exp.features, exp.validation, out)
    return run_stage(spec)


@pytest.mark.slow
def test_two_processes_follow_one_process_with_the_same_global_batch(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    single = run(tiny_dataset, tmp_path / "one", world_size=1, num_identities=4)
    double = run(tiny_dataset, tmp_path / "two", world_size=2, num_identities=2)
    assert list(double["epoch"]) == [1, 2, 3]
    assert (tmp_path / "two/launch/spec.json").is_file()
    # Tolerance: the two runs sum the same numbers in a different order (all-reduce vs one
    # batch), so float32 rounding differs a little and grows over the steps.
    for col in ("loss_total", "loss_ce", "loss_triplet", "train_acc"):
        assert double[col].to_numpy() == pytest.approx(single[col].to_numpy(), rel=1e-4, abs=1e-5), col
    one = ModelFile.load(tmp_path / "one/model.pt").state_dict
    two = ModelFile.load(tmp_path / "two/model.pt").state_dict
    assert one.keys() == two.keys()
    for k in one:
        if one[k].is_floating_point():
            assert torch.allclose(one[k], two[k], rtol=1e-4, atol=1e-5), k
