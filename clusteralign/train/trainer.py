"""One training loop for both stages: stage 1 (strong baseline) and stage 2 (anchor fine-tuning).

The training set is decoded once into a uint8 tensor on the training device; every batch is
indexed, augmented and fed on that device, so there is no DataLoader and no host round trip
in the step. Loss values are accumulated on the device and read once per epoch.
Every `checkpoint_every` epochs the complete state (weights, optimisers, scheduler, anchors,
RNG states, history) is written atomically, in a background thread while the next epoch
trains; a rerun resumes from it and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..config import EvalConfig, FeatureConfig, ModelConfig, StageConfig, result_settings, to_dict
from ..data.manifest import train_label_pids
from ..eval.distance import compute_distance_matrix
from ..eval.rank import evaluate_rank
from ..io import UnreadableFileError, file_sha256, remove_stale_temporaries, torch_load
from ..models import build_model
from ..models.file import ModelFile
from . import anchors as anchor_ops
from . import compile_cache
from . import distributed
from .augment import AugmentSpec
from .batches import augmented_batches, default_chunk
from .checkpoint import CheckpointWriter
from .data import SplitData, load_split
from .features import extract_features
from .history import History
from .inputs import recorded_inputs
from .objective import Objective
from .sampler import PKSampler, RandomBatchSampler, batch_sampler
from .schedule import build_optimizer, build_scheduler
from .step import GraphedStep, Step, build_step

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoints/last.pt"


@dataclass
class StageSpec:
    """Everything one stage needs, with explicit types (built by the workflow script)."""

    name: str
    manifest: pd.DataFrame
    model: ModelConfig
    stage: StageConfig
    features: FeatureConfig
    validation: EvalConfig
    out_dir: Path
    init_model: Path | None = None
    init_anchors: Path | None = None


def augment_spec(stage: StageConfig, train: bool = True) -> AugmentSpec:
    """The stage's augmentation settings as the augment module's spec."""
    a = stage.augment
    return AugmentSpec(
        height=a.height,
        width=a.width,
        flip_prob=a.flip_prob if train else 0.0,
        pad=a.pad if train else 0,
        random_erasing_prob=a.random_erasing_prob if train else 0.0,
        erasing_fill=a.erasing_fill,
    )


def cache_size(stage: StageConfig) -> tuple[int, int]:
    """(H, W) at which images are decoded and held in memory."""
    a = stage.augment
    return (a.cache_height or a.height, a.cache_width or a.width)


def _fingerprint(spec: StageSpec) -> str:
    """Identifies what a checkpoint was trained on, so a stale one is never resumed."""
    h = hashlib.sha256()
    # Run-only settings (checkpoint_every, augment_chunk) change nothing a checkpoint holds.
    h.update(json.dumps([spec.name, to_dict(spec.model), result_settings(spec.stage)], sort_keys=True).encode())
    h.update(pd.util.hash_pandas_object(spec.manifest, index=False).to_numpy().tobytes())
    for path in (spec.init_model, spec.init_anchors):
        if path is not None:
            h.update(file_sha256(path).encode())
    h.update(_source_digest())
    return h.hexdigest()


def _source_digest() -> bytes:
    # Snakemake reruns a job when its script changes, not when the package it calls does: after
    # an edit to a loss or a model, a checkpoint of the old code must not be resumed.
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(p for ext in ("*.py", "*.pyx") for p in package.rglob(ext)):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(file_sha256(path).encode())
    return h.digest()


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "augment": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(gen: torch.Generator, state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def validate(
    model: nn.Module,
    query: SplitData,
    gallery: SplitData,
    features: FeatureConfig,
    eval_cfg: EvalConfig,
    stage: StageConfig,
    device: torch.device,
) -> dict[str, float]:
    """R1/R5/R10/mAP/mINP of the current model on query vs gallery (re-ranking is not applied)."""
    spec = augment_spec(stage, train=False)
    kw = dict(device=device, batch_size=features.batch_size, flip=features.flip, amp=stage.amp,
              channels_last=stage.channels_last)
    qf, _ = extract_features(model, query.images, spec, **kw)
    gf, _ = extract_features(model, gallery.images, spec, **kw)
    dist = compute_distance_matrix(qf, gf, metric=eval_cfg.metric, normalize=eval_cfg.normalize)
    # Small validation galleries are normal here; cap quietly instead of warning every epoch.
    result = evaluate_rank(dist, query.pids.numpy(), gallery.pids.numpy(), query.camids.numpy(),
                           gallery.camids.numpy(), max_rank=min(eval_cfg.max_rank, len(gallery.pids)))
    metrics = result.to_dict()
    return {k: metrics[k] for k in ("R1", "R5", "R10", "mAP", "mINP") if k in metrics}


def train_features(model: nn.Module, train: SplitData, stage: StageConfig, features: FeatureConfig,
                   device: torch.device, with_probs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Test features (and own-class probabilities) of every training image."""
    return extract_features(
        model, train.images, augment_spec(stage, train=False), device=device, batch_size=features.batch_size,
        flip=features.flip, amp=stage.amp, channels_last=stage.channels_last,
        labels=train.labels if with_probs else None,
    )


def fresh_anchors(model: nn.Module, train: SplitData, num_classes: int, stage: StageConfig, features: FeatureConfig,
                  device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
    """The anchor dictionary of the current model, and its spread diagnostics."""
    probability = stage.anchors.weighting == "probability"
    feats, probs = train_features(model, train, stage, features, device, with_probs=probability)
    labels = train.labels.to(device)
    anchors = anchor_ops.compute_anchors(feats, labels, num_classes, weights=probs if probability else None)
    return anchors, anchor_ops.diagnostics(feats, labels, anchors)


class _Progress:
    """A tqdm bar on a terminal; plain log lines otherwise (e.g. under Snakemake)."""

    def __init__(self, total: int, desc: str):
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_stage(spec: StageSpec, epoch_budget: int | None = None) -> pd.DataFrame | None:
    """Train one stage, resuming from its checkpoint when there is a matching one.

    Writes ``model.pt``, ``history.csv`` and TensorBoard events (``tb/``) under `spec.out_dir`.
    `epoch_budget` stops after that many epochs in this call, as a killed job would stop,
    and the next call resumes (how the tests check resuming). Returns the history (None
    when stopped early, and on ranks other than 0 of a torchrun job).
    """
    stage, out_dir = spec.stage, Path(spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx, device = distributed.setup(stage.device)
    try:
        return _train_stage(spec, stage, out_dir, ctx, device, epoch_budget)
    finally:
        distributed.teardown(ctx)


def _train_stage(spec: StageSpec, stage: StageConfig, out_dir: Path, ctx: distributed.DistContext,
                 device: torch.device, epoch_budget: int | None) -> pd.DataFrame | None:
    if stage.num_threads:
        torch.set_num_threads(stage.num_threads)
    if stage.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    amp = stage.amp if device.type == "cuda" else "none"
    if stage.amp != amp:
        log.warning("amp=%s needs CUDA; training in float32 on %s", stage.amp, device)

    manifest = spec.manifest
    size = cache_size(stage)
    t0 = time.perf_counter()
    train = load_split(manifest, "train", size).to(device)
    query = load_split(manifest, "query", size) if ctx.is_main else None
    gallery = load_split(manifest, "gallery", size) if ctx.is_main else None
    num_classes = int(train.labels.max()) + 1
    label_pids = train_label_pids(manifest)
    if ctx.is_main:
        log.info("%s: %d training images of %d identities, %d query, %d gallery, decoded in %.1fs on %s%s",
                 spec.name, len(train.labels), num_classes, len(query.labels), len(gallery.labels),
                 time.perf_counter() - t0, device, f" x {ctx.world_size} processes" if ctx.enabled else "")
    t_setup = time.perf_counter()

    torch.manual_seed(stage.seed)
    # Epochs trained before this stage, so epoch-scheduled parts of a model (ABD-Net's
    # regulariser) keep counting across stages.
    epoch_offset = 0
    if spec.init_model is not None:
        init = ModelFile.load(spec.init_model)
        if init.num_classes != num_classes:
            raise ValueError(f"{spec.init_model} has {init.num_classes} classes, the manifest {num_classes}")
        model = init.build()
        epoch_offset = int(init.meta.get("epochs", 0))
    else:
        model = build_model(spec.model, num_classes)
    if ctx.enabled and stage.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device)
    if stage.channels_last:
        model.to(memory_format=torch.channels_last)
    objective = Objective(stage.loss, num_classes, model.feature_dim, ctx=ctx).to(device)
    graphed = stage.cuda_graph and device.type == "cuda"
    if stage.cuda_graph and not graphed:
        log.warning("cuda_graph needs CUDA; training eagerly on %s", device)
    optimizer = build_optimizer(list(model.named_parameters()), stage.optimizer, fused=device.type == "cuda",
                                capturable=graphed)
    scheduler = build_scheduler(optimizer, stage.schedule)
    center_opt = (torch.optim.SGD(objective.center.parameters(), lr=stage.loss.center_lr)
                  if objective.center is not None else None)
    step_model: nn.Module = model
    if ctx.enabled:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if stage.compile:
        step_model = torch.compile(step_model)
        log.info("%s: torch.compile keeps its kernels in %s", spec.name,
                 os.environ.get(compile_cache.ENV, "its default cache (/tmp/torchinductor_<user>)"))
    step = build_step(step_model, objective, optimizer, graphed=graphed, amp=amp, channels_last=stage.channels_last,
                      center_opt=center_opt, center_weight=stage.loss.center_weight, ctx=ctx)
    # Each rank augments its own images with its own random stream.
    gen = torch.Generator(device=device).manual_seed(stage.seed + 1 + ctx.rank)
    sampler = batch_sampler(stage.sampler, train.labels.tolist(), num_identities=stage.num_identities,
                            num_instances=stage.num_instances, batch_size=stage.batch_size, seed=stage.seed,
                            rank=ctx.rank, world_size=ctx.world_size)
    history = History(spec.name)

    def shared_anchors() -> tuple[torch.Tensor, dict[str, float]]:
        """Fresh anchors computed once (rank 0) and broadcast."""
        if ctx.is_main:
            new, diag = fresh_anchors(model, train, num_classes, stage, spec.features, device)
        else:
            new, diag = torch.empty(num_classes, model.feat_dim, device=device), {}
        return distributed.broadcast_(new.contiguous(), ctx), diag

    anchors: torch.Tensor | None = None
    if objective.needs_anchors:
        if spec.init_anchors is None:
            anchors, _ = shared_anchors()
        else:
            aset = anchor_ops.AnchorSet.load(spec.init_anchors)
            if list(aset.pids) != label_pids:
                raise ValueError(f"{spec.init_anchors} was computed for other training identities than the manifest's")
            anchors = aset.anchors.to(device)

    fingerprint = _fingerprint(spec)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ctx.is_main:  # the one writer of both: what an attempt killed while writing left goes
        for stale in (*remove_stale_temporaries(ckpt_path), *remove_stale_temporaries(out_dir / "model.pt")):
            log.info("%s: removed %s, left by an earlier attempt", spec.name, stale)
    start_epoch = 0
    ckpt = None
    if ckpt_path.is_file():
        try:
            ckpt = torch_load(ckpt_path, map_location=device)
        except UnreadableFileError as err:
            # A retry must not fail forever on it: the next checkpoint replaces it.
            if ctx.is_main:
                log.warning("%s: ignoring an unreadable checkpoint, training from the start: %s", spec.name, err)
    if ckpt is not None:
        if isinstance(ckpt, dict) and ckpt.get("fingerprint") == fingerprint and len(ckpt["rng"]) == ctx.world_size:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            objective.load_state_dict(ckpt["objective"])
            if center_opt is not None:
                center_opt.load_state_dict(ckpt["center_optimizer"])
            anchors = ckpt["anchors"]
            _set_rng_state(gen, ckpt["rng"][ctx.rank])
            history.restore(ckpt["history"])
            start_epoch = int(ckpt["epoch"])
            if ctx.is_main:
                log.info("%s: resuming from %s after epoch %d", spec.name, ckpt_path, start_epoch)
        elif ctx.is_main:
            log.warning("%s: ignoring %s, written for other settings, data, package code or process count",
                        spec.name, ckpt_path)
    if ctx.is_main:
        tb_dir = out_dir / "tb"
        shutil.rmtree(tb_dir, ignore_errors=True)  # re-emitted below from the restored history
        history.open_tensorboard(tb_dir)
        # With the decoding line above, splits a stage's wall-clock into decoding, set-up and epochs.
        log.info("%s: set up in %.1fs (model, optimizer, anchors, checkpoint check)", spec.name,
                 time.perf_counter() - t_setup)

    # The TensorBoard writer is closed whatever happens, so an error leaves no thread behind.
    try:
        epochs_run = 0
        # On an error the write in progress still completes: the writer's thread is not a daemon.
        writer = CheckpointWriter()
        for epoch in range(start_epoch, stage.epochs):
            if epoch_budget is not None and epochs_run >= epoch_budget:
                writer.wait()
                if ctx.is_main:
                    log.info("%s: stopping after %d epoch(s) as asked; rerun to continue", spec.name, epochs_run)
                return None
            if hasattr(model, "set_epoch"):
                model.set_epoch(epoch_offset + epoch)
                if isinstance(step, GraphedStep):
                    step.reset()  # the epoch may switch a term on: capture the step again
            row = _train_one_epoch(step_model, step, train, sampler, epoch, stage, anchors, gen, device, spec.name, ctx)
            row["lr"] = float(scheduler.get_last_lr()[0])  # a device tensor when the step is graphed
            scheduler.step()
            last = epoch + 1 == stage.epochs
            evaluate_now = last or (stage.eval_every > 0 and (epoch + 1) % stage.eval_every == 0)
            t_eval = time.perf_counter()
            refresh = objective.needs_anchors and stage.anchors.update == "epoch" and not last
            if refresh or (evaluate_now and stage.anchor_diagnostics):
                # The model does not change between this epoch's end and the next one's start,
                # so these anchors serve both the diagnostics and the next epoch's targets.
                new_anchors, diag = shared_anchors()
                row.update(diag)
                if refresh:
                    anchors = new_anchors
            if evaluate_now and ctx.is_main:
                row.update(validate(model, query, gallery, spec.features, spec.validation, stage, device))
            # Both end in host reads (diagnostics, ranking), so the device work is included.
            row["eval_seconds"] = time.perf_counter() - t_eval
            rng_states = distributed.gather_objects(_rng_state(gen), ctx)
            epochs_run += 1
            if not ctx.is_main:
                continue
            history.append(epoch + 1, row)
            history.write_csv(out_dir / "history.csv")
            log.info("%s", history.describe_last(stage.epochs))
            if last or (epoch + 1) % stage.checkpoint_every == 0:
                writer.save({
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "objective": objective.state_dict(),
                    "center_optimizer": center_opt.state_dict() if center_opt is not None else None,
                    "anchors": anchors,
                    "rng": rng_states,
                    "history": history.rows,
                }, ckpt_path)

        writer.wait()
    finally:
        history.close()
    if not ctx.is_main:
        return None
    # Also when a finished checkpoint was resumed and no epoch ran (e.g. the job was killed
    # after training but before Snakemake saw its outputs, which it then deleted).
    history.write_csv(out_dir / "history.csv")
    ModelFile(
        model_cfg=spec.model,
        num_classes=num_classes,
        pids=label_pids,
        state_dict=model.state_dict(),
        # "input": what feature extraction outside the workflow needs (clusteralign.FeatureExtractor).
        meta={"stage": spec.name, "epochs": epoch_offset + stage.epochs,
              "input": recorded_inputs(stage, spec.features).to_meta()},
    ).save(out_dir / "model.pt")
    return history.frame()


def _train_one_epoch(
    model: nn.Module,
    step: Step,
    train: SplitData,
    sampler: PKSampler | RandomBatchSampler,
    epoch: int,
    stage: StageConfig,
    anchors: torch.Tensor | None,
    gen: torch.Generator,
    device: torch.device,
    name: str,
    ctx: distributed.DistContext,
) -> dict[str, float]:
    model.train()
    sampler.set_epoch(epoch)
    batches = torch.tensor(list(sampler), dtype=torch.long, device=device)
    spec = augment_spec(stage)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    progress = _Progress(len(batches) if ctx.is_main else 0, f"{name} epoch {epoch + 1}/{stage.epochs}")
    t0 = time.perf_counter()
    chunk = stage.augment_chunk or default_chunk(device)
    for x, y in augmented_batches(train.images, train.labels, batches, spec, gen, chunk=chunk,
                                  channels_last=stage.channels_last):
        terms, out = step(x, y, anchors)
        if anchors is not None and stage.anchors.update == "momentum":
            # Every rank applies the whole global batch, so the anchors stay identical.
            anchor_ops.momentum_update(anchors, distributed.all_gather_no_grad(out.embedding().detach(), ctx),
                                       distributed.all_gather_no_grad(y, ctx), stage.anchors.momentum)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v
        correct += (out.logits[0].argmax(1) == y).sum()
        progress.update()
    progress.close()
    for v in sums.values():
        distributed.average_(v, ctx)
    distributed.average_(correct, ctx)
    n_batches = max(len(batches), 1)
    n_images = n_batches * batches.shape[1] if len(batches) else 0
    row = {f"loss_{k}": float(v) / n_batches for k, v in sums.items()}
    row["train_acc"] = float(correct) / max(n_images, 1)
    elapsed = time.perf_counter() - t0
    row["train_seconds"] = elapsed
    row["images_per_second"] = n_images * ctx.world_size / elapsed if elapsed > 0 else math.nan
    return row
