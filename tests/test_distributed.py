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


@pytest.mark.slow
def test_a_terminated_launcher_stops_its_ranks(tiny_dataset, tmp_path):
    # SIGTERM to the launching process only (a new session, so the ranks do not get it too):
    # the ranks must stop with it rather than train on, orphaned.
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    manifest = tmp_path / "manifest.csv"
    tiny_dataset[1].to_csv(manifest, index=False)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from clusteralign.config import build_experiment
        from clusteralign.data.manifest import read_manifest
        from clusteralign.pipeline.script import exit_on_sigterm
        from clusteralign.train.launch import run_stage
        from clusteralign.train.trainer import StageSpec

        exit_on_sigterm()
        stage = {{**{stage1(2, 2)!r}, "epochs": 200, "eval_every": 0}}
        exp = build_experiment("d", {{"dataset": "s", "model": "tiny", "stage1": stage}}, {MODELS!r})
        run_stage(StageSpec("stage1", read_manifest({str(manifest)!r}), exp.model, exp.stage1, exp.features,
                            exp.validation, Path({str(tmp_path / "out")!r})))
    """)
    spec = str(tmp_path / "out/launch/spec.json")

    def ranks() -> list[int]:
        found = subprocess.run(["pgrep", "-f", f"clusteralign.train.launch {spec}"], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(ranks()) < 3 and time.monotonic() < deadline:  # torchrun and its two ranks
            time.sleep(0.5)
        assert len(ranks()) >= 3, "torchrun and its ranks did not start"
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=120) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 60
        while ranks() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ranks() == []
    finally:
        launcher.kill()
        for pid in ranks():
            os.kill(pid, signal.SIGKILL)
