"""This project's training step: stage 1 as the workflow trains it (clusteralign.train.trainer.train_stage).

The Market-size preset's stage 1 (configs/synthetic_market_size.yaml) at the batch, input size
and backbone asked for. On a GPU that is the preset's fastest setting (bf16, channels_last, the
step as one CUDA graph holding torch.compile's kernels, cuDNN free to pick its fastest
kernels); on the CPU the stage's defaults (float32, channels_last, eager, deterministic).

The data path is the trainer's own: the manifest's training images decoded once, at their
stored size, into a uint8 tensor on the device, then indexed, resized and augmented there
batch by batch. The decoding is part of the set-up, not of the timed steps. The trainer times
each epoch (history.csv: train_seconds, images_per_second), so warm-up is counted in whole
epochs: the first epochs holding at least `settings.warmup` steps (always the first, which
pays for compiling and capturing the graph) are left out; the validation after the last epoch
is outside the epochs' time.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

import clusteralign
from clusteralign.config import build_experiments, deep_merge
from clusteralign.data.manifest import read_manifest
from clusteralign.train.sampler import PKSampler
from clusteralign.train.trainer import StageSpec, train_stage

from peer_common import PRESET, Result, Settings

# The preset's GPU speed settings; on the CPU the stage's defaults replace them.
GPU_SETTINGS = ("amp", "channels_last", "cuda_graph", "compile", "deterministic")


def experiment_config(settings: Settings, epochs: int, cache_size: tuple[int, int]) -> dict:
    """The preset as a workflow config, its stage 1 set to this run's batch, size, device and epochs."""
    config = yaml.safe_load(PRESET.read_text())
    (name, experiment), = config["experiments"].items()
    stage = dict(experiment["stage1"])
    if settings.device == "cpu":
        for key in GPU_SETTINGS:
            stage.pop(key, None)
    # Validation and the checkpoint once, after the last epoch: neither inside the timed epochs.
    experiment["stage1"] = deep_merge(stage, {
        "num_identities": settings.num_identities, "num_instances": settings.num_instances,
        "epochs": epochs, "eval_every": 0, "checkpoint_every": epochs, "anchor_diagnostics": False,
        "seed": settings.seed, "device": settings.device,
        "augment": {"height": settings.height, "width": settings.width,
                    "cache_height": cache_size[0], "cache_width": cache_size[1]}})
    config["models"][experiment["model"]]["backbone"] = settings.backbone
    return config


def stored_size(manifest: pd.DataFrame) -> tuple[int, int]:
    """(H, W) of the first training image: the set's images share one size."""
    from PIL import Image

    with Image.open(manifest.loc[manifest["split"] == "train", "path"].iloc[0]) as img:
        return img.height, img.width


def measure(settings: Settings) -> Result:
    t_start = time.perf_counter()
    manifest = read_manifest(settings.manifest)
    labels = manifest.loc[manifest["split"] == "train", "label"].tolist()
    per_epoch = len(PKSampler(labels, settings.num_identities, settings.num_instances, seed=settings.seed))
    warm = max(1, math.ceil(settings.warmup / per_epoch))
    timed = math.ceil(settings.steps / per_epoch)
    config = experiment_config(settings, warm + timed, stored_size(manifest))
    (name, exp), = build_experiments(config).items()
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as out:
        train_stage(StageSpec("stage1", manifest, exp.model, exp.stage1, exp.features, exp.validation, Path(out)))
        history = pd.read_csv(Path(out) / "history.csv")
    wall = time.perf_counter() - t_start
    rows = history.iloc[warm:]
    seconds = float(rows["train_seconds"].sum())
    images = round(float((rows["images_per_second"] * rows["train_seconds"]).sum()))
    s = exp.stage1
    recipe = (f"stage 1 {settings.backbone} (last stride 1, BNNeck), "
              + (f"{s.amp}, channels_last, cuda_graph, compile, deterministic {s.deterministic}"
                 if settings.device == "cuda" else f"fp32, channels_last {s.channels_last}, eager")
              + f", images decoded once at {s.augment.cache_height}x{s.augment.cache_width} and augmented on the "
              f"{settings.device.upper() if settings.device == 'cpu' else 'GPU'}")
    return Result(
        toolkit="clusteralign", version=clusteralign.__version__, recipe=recipe,
        warmup=f"{warm} epoch{'s' if warm > 1 else ''} ({warm * per_epoch} steps)",
        steps=images // settings.batch, images=images, seconds=seconds,
        setup_seconds=wall - seconds - float(history["eval_seconds"].sum()), train_images=len(labels),
        train_ids=len(set(labels)))
