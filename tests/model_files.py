"""Tiny model files as the trainer writes them, for the tests of what uses a trained model."""

from __future__ import annotations

from pathlib import Path

import torch

from clusteralign.config import build_experiment
from clusteralign.data.images import load_images
from clusteralign.data.manifest import train_label_pids
from clusteralign.models import build_model
from clusteralign.models.file import ModelFile
from clusteralign.train.inputs import recorded_inputs

MODELS = {"tiny": {"backbone": "resnet18", "base_width": 8}}


def tiny_experiment(flip: bool = True, **augment):
    """The tests' tiny baseline at 64 x 32 on the CPU; `augment` adds to its input settings."""
    stage1 = {"augment": {"height": 64, "width": 32, **augment}, "device": "cpu"}
    return build_experiment("tiny", {"dataset": "synthetic", "model": "tiny", "stage1": stage1,
                                     "features": {"flip": flip}}, MODELS)


def write_model_file(path: Path, manifest, exp, record_inputs: bool = True) -> Path:
    """A tiny baseline whose batch-norm statistics come from the set's images (no optimiser step)."""
    torch.manual_seed(0)
    pids = train_label_pids(manifest)
    model = build_model(exp.model, len(pids), load_pretrained=False)
    images = load_images(manifest.loc[manifest["split"] == "train", "path"].tolist()[:32], (64, 32))
    model.train()
    with torch.no_grad():
        model(images.float() / 255)
    meta = {"stage": "stage1", "epochs": 1}
    if record_inputs:
        meta["input"] = recorded_inputs(exp.stage1, exp.features).to_meta()
    ModelFile(exp.model, len(pids), pids, model.state_dict(), meta).save(path)
    return path
