"""One training loop for both stages: stage 1 (strong baseline) and stage 2 (anchor fine-tuning).

The training set is decoded once into a uint8 tensor on the training device; every batch is
indexed, augmented and fed on that device, so there is no DataLoader and no host round trip
in the step. Loss values are accumulated on the device and read once per epoch.
Every `checkpoint_every` epochs the complete `TrainingState` is written atomically, in a
background thread while the next epoch trains; a rerun resumes from it and reaches the same
weights as an uninterrupted run.

    train_stage: build -> resume -> epochs -> finish
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from ..config import EvalConfig, FeatureConfig, InferenceConfig, ModelConfig, StageConfig
from ..data.manifest import train_label_pids
from ..io import UnreadableFileError, remove_stale_temporaries, torch_load
from ..models import build_model
from ..models.file import ModelFile
from . import anchors as anchor_ops
from . import compile_cache, distributed
from .batches import augmented_batches, default_chunk
from .checkpoint import CheckpointWriter
from .data import SplitData, load_split
from .fingerprint import stage_fingerprint
from .history import History
from .inputs import recorded_inputs, train_augment
from .objective import Objective
from .sampler import PKSampler, RandomBatchSampler, batch_sampler
from .schedule import build_optimizer, build_scheduler
from .state import TrainingState
from .step import GraphedStep, Step, build_step
from .validation import validate

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


@dataclass
class _Run:
    """What one training run works with, built once: its data, the step and the batch sampler."""

    spec: StageSpec
    ctx: distributed.DistContext
    device: torch.device
    train: SplitData
    query: SplitData | None  # validation splits: rank 0 only
    gallery: SplitData | None
    num_classes: int
    inference: InferenceConfig
    # Epochs trained before this stage, so epoch-scheduled parts of a model (ABD-Net's
    # regulariser) keep counting across stages.
    epoch_offset: int
    step_model: nn.Module  # the model as the step runs it: wrapped by DDP, compiled
    step: Step
    sampler: PKSampler | RandomBatchSampler


def train_stage(spec: StageSpec, epoch_budget: int | None = None) -> pd.DataFrame | None:
    """Train one stage, resuming from its checkpoint when there is a matching one.

    Writes ``model.pt``, ``history.csv`` and TensorBoard events (``tb/``) under `spec.out_dir`.
    `epoch_budget` stops after that many epochs in this call, as a killed job would stop,
    and the next call resumes (how the tests check resuming). Returns the history (None
    when stopped early, and on ranks other than 0 of a torchrun job).
    """
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    ctx, device = distributed.setup(spec.stage.device)
    try:
        run, state = _build(spec, ctx, device)
        _resume(run, state)
        try:  # the TensorBoard writer is closed whatever happens: an error leaves no thread behind
            finished = _train_epochs(run, state, epoch_budget)
        finally:
            state.history.close()
        return _finish(run, state) if finished and ctx.is_main else None
    finally:
        distributed.teardown(ctx)


# --------------------------------------------------------------------------- build


def _configure_torch(stage: StageConfig, device: torch.device) -> str:
    """Threads and determinism as the stage asks; returns the precision it trains at on `device`."""
    if stage.num_threads:
        torch.set_num_threads(stage.num_threads)
    torch.backends.cudnn.benchmark = not stage.deterministic
    if stage.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    amp = stage.amp if device.type == "cuda" else "none"
    if stage.amp != amp:
        log.warning("amp=%s needs CUDA; training in float32 on %s", stage.amp, device)
    return amp


def _load_data(spec: StageSpec, ctx: distributed.DistContext,
               device: torch.device) -> tuple[SplitData, SplitData | None, SplitData | None]:
    size = InferenceConfig.of(spec.stage).cache_size
    t0 = time.perf_counter()
    train = load_split(spec.manifest, "train", size).to(device)
    query = load_split(spec.manifest, "query", size) if ctx.is_main else None
    gallery = load_split(spec.manifest, "gallery", size) if ctx.is_main else None
    if ctx.is_main:
        log.info("%s: %d training images of %d identities, %d query, %d gallery, decoded in %.1fs on %s%s",
                 spec.name, len(train.labels), int(train.labels.max()) + 1, len(query.labels), len(gallery.labels),
                 time.perf_counter() - t0, device, f" x {ctx.world_size} processes" if ctx.enabled else "")
    return train, query, gallery


def _build_model(spec: StageSpec, num_classes: int, ctx: distributed.DistContext,
                 device: torch.device) -> tuple[nn.Module, int]:
    """The network (stage 1's weights for stage 2) on `device`, and the epochs it was trained before."""
    torch.manual_seed(spec.stage.seed)  # before the network's initialisation draws from it
    epoch_offset = 0
    if spec.init_model is not None:
        init = ModelFile.load(spec.init_model)
        if init.num_classes != num_classes:
            raise ValueError(f"{spec.init_model} has {init.num_classes} classes, the manifest {num_classes}")
        model = init.build()
        epoch_offset = int(init.meta.get("epochs", 0))
    else:
        model = build_model(spec.model, num_classes)
    if ctx.enabled and spec.stage.sync_bn:
        model = distributed.convert_sync_batchnorm(model, device)
    model.to(device)
    if spec.stage.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, epoch_offset


def _build(spec: StageSpec, ctx: distributed.DistContext, device: torch.device) -> tuple[_Run, TrainingState]:
    stage = spec.stage
    amp = _configure_torch(stage, device)
    train, query, gallery = _load_data(spec, ctx, device)
    t_setup = time.perf_counter()
    num_classes = int(train.labels.max()) + 1
    model, epoch_offset = _build_model(spec, num_classes, ctx, device)
    objective = Objective(stage.loss, num_classes, model.branch_feature_dim, ctx=ctx).to(device)
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
    run = _Run(
        spec, ctx, device, train, query, gallery, num_classes, InferenceConfig.of(stage), epoch_offset, step_model,
        build_step(step_model, objective, optimizer, graphed=graphed, amp=amp, channels_last=stage.channels_last,
                   center_opt=center_opt, center_weight=stage.loss.center_weight, ctx=ctx),
        batch_sampler(stage.sampler, train.labels.tolist(), num_identities=stage.num_identities,
                      num_instances=stage.num_instances, batch_size=stage.batch_size, seed=stage.seed,
                      rank=ctx.rank, world_size=ctx.world_size),
    )
    state = TrainingState(
        fingerprint=stage_fingerprint(spec.name, spec.model, stage, spec.manifest, [spec.init_model,
                                                                                    spec.init_anchors]),
        model=model, optimizer=optimizer, scheduler=scheduler, objective=objective,
        center_optimizer=center_opt,
        # Each rank augments its own images with its own random stream.
        generator=torch.Generator(device=device).manual_seed(stage.seed + 1 + ctx.rank),
        history=History(spec.name),
    )
    if objective.needs_anchors:
        state.anchors = _initial_anchors(run, state)
    if ctx.is_main:
        log.info("%s: set up in %.1fs (model, optimizer, anchors)", spec.name, time.perf_counter() - t_setup)
    return run, state


def _shared_anchors(run: _Run, model: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
    """Fresh anchors of `model`, computed once (rank 0) and broadcast, with their diagnostics."""
    if run.ctx.is_main:
        new, diag = anchor_ops.fresh_anchors(model, run.train, run.num_classes, run.spec.stage.anchors,
                                             run.inference, run.spec.features, run.device)
    else:
        new, diag = torch.empty(run.num_classes, model.embedding_dim, device=run.device), {}
    return distributed.broadcast_(new.contiguous(), run.ctx), diag


def _initial_anchors(run: _Run, state: TrainingState) -> torch.Tensor:
    """Stage 2's first targets: the anchor file of stage 1's model, or fresh ones of the model."""
    path = run.spec.init_anchors
    if path is None:
        return _shared_anchors(run, state.model)[0]
    aset = anchor_ops.AnchorSet.load(path)
    if list(aset.pids) != train_label_pids(run.spec.manifest):
        raise ValueError(f"{path} was computed for other training identities than the manifest's")
    return aset.anchors.to(run.device)


# --------------------------------------------------------------------------- resume


def _resume(run: _Run, state: TrainingState) -> None:
    """Continue from the stage's checkpoint when it was written by this very stage."""
    name, ctx, out_dir = run.spec.name, run.ctx, Path(run.spec.out_dir)
    path = out_dir / CHECKPOINT_NAME
    if ctx.is_main:  # the one writer of both: what an attempt killed while writing left goes
        for stale in (*remove_stale_temporaries(path), *remove_stale_temporaries(out_dir / "model.pt")):
            log.info("%s: removed %s, left by an earlier attempt", name, stale)
    checkpoint = None
    if path.is_file():
        try:
            checkpoint = torch_load(path, map_location=run.device)
        except UnreadableFileError as err:
            # A retry must not fail forever on it: the next checkpoint replaces it.
            if ctx.is_main:
                log.warning("%s: ignoring an unreadable checkpoint, training from the start: %s", name, err)
    if checkpoint is not None:
        if state.resumable(checkpoint, ctx.world_size):
            state.load_state_dict(checkpoint, ctx.rank)
            if ctx.is_main:
                log.info("%s: resuming from %s after epoch %d", name, path, state.epoch)
        elif ctx.is_main:
            log.warning("%s: ignoring %s, written for other settings, data, package code or process count",
                        name, path)
    if ctx.is_main:
        shutil.rmtree(out_dir / "tb", ignore_errors=True)  # re-emitted from the restored history
        state.history.open_tensorboard(out_dir / "tb")


# --------------------------------------------------------------------------- epochs


def _train_epochs(run: _Run, state: TrainingState, epoch_budget: int | None) -> bool:
    """Train the remaining epochs, checkpointing as asked; False when `epoch_budget` stopped it first."""
    stage, ctx = run.spec.stage, run.ctx
    # On an error the write in progress still completes: the writer's thread is not a daemon.
    writer = CheckpointWriter()
    for epochs_run, epoch in enumerate(range(state.epoch, stage.epochs)):
        if epoch_budget is not None and epochs_run >= epoch_budget:
            writer.wait()
            if ctx.is_main:
                log.info("%s: stopping after %d epoch(s) as asked; rerun to continue", run.spec.name, epochs_run)
            return False
        row = _epoch(run, state, epoch)
        state.epoch = epoch + 1
        rng_states = distributed.gather_objects(state.rng_state(), ctx)
        if not ctx.is_main:
            continue
        state.history.append(state.epoch, row)
        state.history.write_csv(Path(run.spec.out_dir) / "history.csv")
        log.info("%s", state.history.describe_last(stage.epochs))
        if state.epoch == stage.epochs or state.epoch % stage.checkpoint_every == 0:
            writer.save(state.state_dict(rng_states), Path(run.spec.out_dir) / CHECKPOINT_NAME)
    writer.wait()
    return True


def _epoch(run: _Run, state: TrainingState, epoch: int) -> dict[str, float]:
    """Train epoch `epoch` (0-based), step the schedule, then refresh anchors and validate as due."""
    stage, model = run.spec.stage, state.model
    if hasattr(model, "set_epoch"):
        model.set_epoch(run.epoch_offset + epoch)
        if isinstance(run.step, GraphedStep):
            run.step.reset()  # the epoch may switch a term on: capture the step again
    row = _train_one_epoch(run, state, epoch)
    row["lr"] = float(state.scheduler.get_last_lr()[0])  # a device tensor when the step is graphed
    state.scheduler.step()
    last = epoch + 1 == stage.epochs
    evaluate_now = last or (stage.eval_every > 0 and (epoch + 1) % stage.eval_every == 0)
    t_eval = time.perf_counter()
    refresh = state.objective.needs_anchors and stage.anchors.update == "epoch" and not last
    if refresh or (evaluate_now and stage.anchor_diagnostics):
        # The model does not change between this epoch's end and the next one's start,
        # so these anchors serve both the diagnostics and the next epoch's targets.
        new_anchors, diag = _shared_anchors(run, model)
        row.update(diag)
        if refresh:
            state.anchors = new_anchors
    if evaluate_now and run.ctx.is_main:
        row.update(validate(model, run.query, run.gallery, run.inference, run.spec.features, run.spec.validation,
                            run.device))
    # Both end in host reads (diagnostics, ranking), so the device work is included.
    row["eval_seconds"] = time.perf_counter() - t_eval
    return row


def _train_one_epoch(run: _Run, state: TrainingState, epoch: int) -> dict[str, float]:
    """One pass over the epoch's batches; the mean loss terms, accuracy and throughput."""
    stage, ctx, device = run.spec.stage, run.ctx, run.device
    run.step_model.train()
    run.sampler.set_epoch(epoch)
    batches = torch.tensor(list(run.sampler), dtype=torch.long, device=device)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    # disable=None: a bar on a terminal only, never in a log file (e.g. under Snakemake).
    progress = tqdm(total=len(batches), desc=f"{run.spec.name} epoch {epoch + 1}/{stage.epochs}", leave=False,
                    disable=None if ctx.is_main else True)
    t0 = time.perf_counter()
    chunk = stage.augment_chunk or default_chunk(device)
    for x, y in augmented_batches(run.train.images, run.train.labels, batches, train_augment(stage.augment),
                                  state.generator, chunk=chunk, channels_last=stage.channels_last):
        terms, out = run.step(x, y, state.anchors)
        if state.anchors is not None and stage.anchors.update == "momentum":
            # Every rank applies the whole global batch, so the anchors stay identical.
            anchor_ops.momentum_update(state.anchors, distributed.all_gather_no_grad(out.embedding().detach(), ctx),
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


# --------------------------------------------------------------------------- finish


def _finish(run: _Run, state: TrainingState) -> pd.DataFrame:
    """Write history.csv and model.pt (last, atomically: it exists only once the stage is complete)."""
    spec, out_dir = run.spec, Path(run.spec.out_dir)
    # Also when a finished checkpoint was resumed and no epoch ran (e.g. the job was killed
    # after training but before Snakemake saw its outputs, which it then deleted).
    state.history.write_csv(out_dir / "history.csv")
    ModelFile(
        model_cfg=spec.model,
        num_classes=run.num_classes,
        pids=train_label_pids(spec.manifest),
        state_dict=state.model.state_dict(),
        # "input": what feature extraction outside the workflow needs (clusteralign.FeatureExtractor).
        meta={"stage": spec.name, "epochs": run.epoch_offset + spec.stage.epochs,
              "input": recorded_inputs(spec.stage, spec.features).to_meta()},
    ).save(out_dir / "model.pt")
    return state.history.frame()
