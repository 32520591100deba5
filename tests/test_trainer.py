"""Both stages on the tiny synthetic set: outputs, resume exactness, determinism, TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from clusteralign.config import build_experiment
from clusteralign.io import torch_load
from clusteralign.models.file import ModelFile
from clusteralign.train.anchors import AnchorSet
from clusteralign.train.trainer import StageSpec, train_stage

# Every test here trains a stage or runs Snakemake.
pytestmark = pytest.mark.slow

MODELS = {"tiny": {"backbone": "resnet18", "base_width": 8}}
RAW = {
    "dataset": "synthetic",
    "model": "tiny",
    "stage1": {
        "epochs": 3,
        "num_identities": 4,
        "num_instances": 2,
        "augment": {"height": 64, "width": 32},
        "schedule": {"warmup_epochs": 1, "milestones": [2]},
        "num_threads": 1,
        # The bit-exact rerun and resume checks are the CPU's promise; tests/test_cuda.py covers CUDA.
        "device": "cpu",
    },
    # Stage 2 draws random batches (the reference's); the tiny training split holds a few dozen images.
    "stage2": {"epochs": 2, "optimizer": {"lr": 3.5e-5}, "batch_size": 8},
}


# Wall-clock columns of history.csv: the only ones a rerun may change.
TIMES = ["train_seconds", "eval_seconds", "images_per_second"]


def experiment(**stage1):
    raw = dict(RAW, stage1={**RAW["stage1"], **stage1})
    return build_experiment("tiny", raw, MODELS)


def spec(name, manifest, out, exp, **kw):
    stage = exp.stage1 if name == "stage1" else exp.stage2
    return StageSpec(name, manifest, exp.model, stage, exp.features, exp.validation, Path(out), **kw)


def state(path):
    return ModelFile.load(path).state_dict


@pytest.fixture(scope="module")
def stage1_run(tiny_dataset, tmp_path_factory):
    _, manifest = tiny_dataset
    out = tmp_path_factory.mktemp("stage1")
    history = train_stage(spec("stage1", manifest, out, experiment()))
    return out, history


def test_stage1_writes_model_history_and_events(stage1_run):
    out, history = stage1_run
    assert (out / "model.pt").is_file() and (out / "checkpoints/last.pt").is_file()
    table = pd.read_csv(out / "history.csv")
    assert list(table["epoch"]) == [1, 2, 3]
    for col in ("loss_ce", "loss_triplet", "loss_total", "lr", "R1", "R5", "mAP", "mINP", "anchor_dist_own",
                "anchor_dist_other"):
        assert table[col].notna().all(), col
    assert table["lr"].iloc[0] == pytest.approx(3.5e-6) and table["lr"].iloc[1] == pytest.approx(3.5e-4)
    assert table["lr"].iloc[2] == pytest.approx(3.5e-5)
    pd.testing.assert_frame_equal(table, history, check_dtype=False)
    # What FeatureExtractor reads to prepare images as this stage's evaluation did.
    assert ModelFile.load(out / "model.pt").meta["input"] == {
        "height": 64, "width": 32, "cache_height": 64, "cache_width": 32, "flip": True,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}


def test_tensorboard_events_read_back(stage1_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, history = stage1_run
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert "stage1/mAP" in acc.Tags()["scalars"]
    events = acc.Scalars("stage1/mAP")
    assert [e.step for e in events] == [1, 2, 3]
    assert [e.value for e in events] == pytest.approx(list(history["mAP"]))


def test_rerun_is_deterministic(stage1_run, tiny_dataset, tmp_path):
    out, history = stage1_run
    again = train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment()))
    metrics = ["loss_total", "R1", "mAP", "mINP", "anchor_dist_own"]
    pd.testing.assert_frame_equal(again[metrics], history[metrics])
    for k, v in state(out / "model.pt").items():
        assert torch.equal(v, state(tmp_path / "model.pt")[k]), k


def test_resume_reaches_the_same_weights(stage1_run, tiny_dataset, tmp_path):
    out, history = stage1_run
    exp = experiment()
    assert train_stage(spec("stage1", tiny_dataset[1], tmp_path, exp), epoch_budget=1) is None
    assert not (tmp_path / "model.pt").exists()
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1]
    resumed = train_stage(spec("stage1", tiny_dataset[1], tmp_path, exp))
    assert list(resumed["epoch"]) == [1, 2, 3]
    for k, v in state(out / "model.pt").items():
        assert torch.equal(v, state(tmp_path / "model.pt")[k]), k


def test_run_only_settings_change_nothing_and_resume_the_checkpoint(stage1_run, tiny_dataset, tmp_path, caplog):
    # checkpoint_every and augment_chunk are no rerun parameters and no part of the fingerprint.
    out, history = stage1_run
    _, manifest = tiny_dataset
    assert train_stage(spec("stage1", manifest, tmp_path, experiment()), epoch_budget=1) is None
    caplog.clear()
    with caplog.at_level("INFO", logger="clusteralign.train.trainer"):
        resumed = train_stage(spec("stage1", manifest, tmp_path, experiment(checkpoint_every=2, augment_chunk=3)))
    assert "resuming from" in caplog.text and " epoch 1/3" not in caplog.text
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMES), history.drop(columns=TIMES))
    for k, v in state(out / "model.pt").items():
        assert torch.equal(v, state(tmp_path / "model.pt")[k]), k


def test_changed_settings_never_resume_a_stale_checkpoint(stage1_run, tiny_dataset, tmp_path):
    _, manifest = tiny_dataset
    train_stage(spec("stage1", manifest, tmp_path, experiment()), epoch_budget=1)
    history = train_stage(spec("stage1", manifest, tmp_path, experiment(epochs=2)))
    assert list(history["epoch"]) == [1, 2]
    assert history["lr"].iloc[0] == pytest.approx(3.5e-6)  # started again from epoch 1


def test_finished_checkpoint_rewrites_the_outputs_without_training(stage1_run, tiny_dataset, tmp_path, monkeypatch):
    # A job killed after training but before Snakemake saw its outputs: Snakemake deletes them
    # and runs the job again, which finds the final checkpoint.
    import clusteralign.train.trainer as trainer

    out, history = stage1_run
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.pt").write_bytes((out / "checkpoints/last.pt").read_bytes())

    def must_not_train(*args, **kwargs):
        raise AssertionError("an epoch ran although the checkpoint is final")

    monkeypatch.setattr(trainer, "_train_one_epoch", must_not_train)
    again = train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment()))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "history.csv"), pd.read_csv(out / "history.csv"))
    pd.testing.assert_frame_equal(again, history)
    for k, v in state(out / "model.pt").items():
        assert torch.equal(v, state(tmp_path / "model.pt")[k]), k


def test_an_unreadable_checkpoint_is_ignored_with_a_warning(stage1_run, tiny_dataset, tmp_path, caplog):
    # Say a node crash left half a file: the retry trains from the start instead of failing forever.
    out, history = stage1_run
    (tmp_path / "checkpoints").mkdir()
    data = (out / "checkpoints/last.pt").read_bytes()
    (tmp_path / "checkpoints/last.pt").write_bytes(data[: len(data) // 3])
    with caplog.at_level("WARNING"):
        again = train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment(epochs=1)))
    assert list(again["epoch"]) == [1]
    assert "ignoring an unreadable checkpoint" in caplog.text and "last.pt: not a readable torch file" in caplog.text
    assert torch_load(tmp_path / "checkpoints/last.pt")["epoch"] == 1  # replaced by a good one


def test_an_error_during_training_leaves_no_tensorboard_thread(tiny_dataset, tmp_path, monkeypatch):
    import threading

    import clusteralign.train.trainer as trainer

    def fails(*args, **kwargs):
        raise RuntimeError("validation failed")

    before = set(threading.enumerate())
    monkeypatch.setattr(trainer, "validate", fails)
    with pytest.raises(RuntimeError, match="validation failed"):
        train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment(epochs=1)))
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == [], left


def test_changed_package_code_never_resumes_a_checkpoint(stage1_run, tiny_dataset, tmp_path, monkeypatch):
    import clusteralign.train.fingerprint as fingerprint

    out, _ = stage1_run
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.pt").write_bytes((out / "checkpoints/last.pt").read_bytes())
    monkeypatch.setattr(fingerprint, "source_digest", lambda: b"an edited loss function")
    history = train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment()), epoch_budget=1)
    assert history is None  # trained epoch 1 again instead of resuming after epoch 3
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [1]


def test_each_stage_trains_on_the_batches_its_sampler_setting_names(stage1_run, tiny_dataset, tmp_path,
                                                                   monkeypatch):
    import clusteralign.train.trainer as trainer

    made, real = [], trainer.batch_sampler
    monkeypatch.setattr(trainer, "batch_sampler", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    exp = experiment()
    train_stage(spec("stage2", tiny_dataset[1], tmp_path, exp, init_model=stage1_run[0] / "model.pt"), epoch_budget=1)
    [sampler] = made
    assert type(sampler).__name__ == "RandomBatchSampler" and sampler.batch_size == 8
    labels = tiny_dataset[1].query("split == 'train'")
    assert len(sampler) == len(labels) // 8


@pytest.mark.parametrize("update", ["epoch", "fixed", "momentum"])
def test_stage2_anchor_finetuning(stage1_run, tiny_dataset, tmp_path, update):
    from clusteralign.config import InferenceConfig
    from clusteralign.train.anchors import fresh_anchors
    from clusteralign.train.distributed import resolve_device

    out1, _ = stage1_run
    _, manifest = tiny_dataset
    exp = build_experiment("tiny", dict(RAW, stage2={**RAW["stage2"], "anchors": {"update": update}}), MODELS)
    history = train_stage(spec("stage2", manifest, tmp_path, exp, init_model=out1 / "model.pt"))
    assert list(history["epoch"]) == [1, 2]
    assert "loss_anchor" in history and "loss_triplet" not in history
    assert (history["loss_anchor"] > 0).all()
    # the stage-1 weights were the starting point, not a fresh network
    model = ModelFile.load(out1 / "model.pt").build()
    anchors, _ = fresh_anchors(model, _train_split(manifest, exp), model.classifier.out_features,
                               exp.stage2.anchors, InferenceConfig.of(exp.stage2), exp.features, resolve_device("cpu"))
    assert torch.isfinite(anchors).all()


def test_stage1_without_anchor_diagnostics_skips_the_training_pass(stage1_run, tiny_dataset, tmp_path,
                                                                    monkeypatch):
    import clusteralign.train.anchors as anchors

    out, history = stage1_run
    calls = []
    monkeypatch.setattr(anchors, "fresh_anchors", lambda *a, **k: calls.append(1))
    again = train_stage(spec("stage1", tiny_dataset[1], tmp_path, experiment(anchor_diagnostics=False)))
    assert calls == []
    assert "anchor_dist_own" not in again and again["mAP"].notna().all()
    # The diagnostics only read the model: the training is the same without them.
    pd.testing.assert_frame_equal(again[["loss_total", "mAP"]], history[["loss_total", "mAP"]])
    for k, v in state(out / "model.pt").items():
        assert torch.equal(v, state(tmp_path / "model.pt")[k]), k


@pytest.mark.parametrize(("update", "diagnostics", "expected"), [
    # the start, then every epoch but the last for the next one's targets, and the validations'
    ("epoch", True, [0, 1, 2, 3]),
    ("epoch", False, [0, 1, 2]),
    # fixed or momentum-updated anchors: the start, then only the validations (epochs 2 and 3)
    ("fixed", True, [0, 2, 3]),
    ("momentum", True, [0, 2, 3]),
    ("fixed", False, [0]),
])
def test_stage2_computes_fresh_anchors_only_when_they_are_used(stage1_run, tiny_dataset, tmp_path, monkeypatch,
                                                               update, diagnostics, expected):
    import clusteralign.train.anchors as anchors
    import clusteralign.train.trainer as trainer

    out1, _ = stage1_run
    epochs = []
    real = anchors.fresh_anchors
    monkeypatch.setattr(trainer, "_train_one_epoch",
                        _counting(trainer._train_one_epoch, lambda: epochs.append(len(epochs) + 1)))
    calls = []
    monkeypatch.setattr(anchors, "fresh_anchors", _counting(real, lambda: calls.append(len(epochs))))
    stage2 = {**RAW["stage2"], "epochs": 3, "eval_every": 2, "anchor_diagnostics": diagnostics,
              "anchors": {"update": update}}
    exp = build_experiment("tiny", dict(RAW, stage2=stage2), MODELS)
    history = train_stage(spec("stage2", tiny_dataset[1], tmp_path, exp, init_model=out1 / "model.pt"))
    assert calls == expected
    assert history["mAP"].notna().tolist() == [False, True, True]


def _counting(fn, note):
    def wrapped(*args, **kwargs):
        note()
        return fn(*args, **kwargs)
    return wrapped


def _train_split(manifest, exp):
    from clusteralign.config import InferenceConfig
    from clusteralign.train.data import load_split

    return load_split(manifest, "train", InferenceConfig.of(exp.stage2).cache_size)


def test_stage2_uses_the_anchor_file(stage1_run, tiny_dataset, tmp_path):
    out1, _ = stage1_run
    _, manifest = tiny_dataset
    exp = experiment()
    bad = AnchorSet(torch.zeros(8, 64), pids=list(range(100, 108)), stats={})
    bad.save(tmp_path / "anchors.pt")
    with pytest.raises(ValueError, match="other training identities"):
        train_stage(spec("stage2", manifest, tmp_path / "s2", exp, init_model=out1 / "model.pt",
                         init_anchors=tmp_path / "anchors.pt"))


def test_cuda_graph_on_the_cpu_trains_eagerly_and_says_so(tiny_dataset, tmp_path, caplog):
    _, manifest = tiny_dataset
    exp = experiment(epochs=1, device="cpu", cuda_graph=True)
    with caplog.at_level("WARNING", logger="clusteralign.train.trainer"):
        history = train_stage(spec("stage1", manifest, tmp_path, exp))
    assert "cuda_graph needs CUDA" in caplog.text
    assert list(history["epoch"]) == [1] and history["loss_total"].notna().all()
