"""The CUDA paths: bf16 + channels_last training, a sync-free step, bf16 extraction (skipped without a GPU)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from clusteralign.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig, StageConfig, build_experiment
from clusteralign.models import build_model
from clusteralign.models.file import ModelFile
from clusteralign.train.augment import AugmentSpec, train_transform
from clusteralign.train.features import extract_features
from clusteralign.train.objective import Objective
from clusteralign.train.schedule import build_optimizer, build_scheduler
from clusteralign.train.step import GraphedStep, train_step
from clusteralign.train.inputs import train_augment
from clusteralign.train.trainer import StageSpec, train_stage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MODELS = {"tiny": {"backbone": "resnet18", "base_width": 8}}
FAST = {"device": "cuda", "amp": "bf16", "channels_last": True, "deterministic": False}


def test_training_step_never_waits_for_the_device():
    device = torch.device("cuda")
    model = build_model(ModelConfig(backbone="resnet18", base_width=8), 10, load_pretrained=False).to(device)
    model.to(memory_format=torch.channels_last)
    objective = Objective(LossConfig(), 10, model.branch_feature_dim).to(device)
    optimizer = build_optimizer(list(model.named_parameters()), OptimizerConfig(), fused=True)
    assert optimizer.defaults.get("fused")
    stage = StageConfig(num_identities=4, num_instances=2, augment=AugmentConfig(height=64, width=32))
    images = torch.randint(0, 256, (8, 3, 64, 32), dtype=torch.uint8, device=device)
    labels = torch.arange(4, device=device).repeat_interleave(2)
    gen = torch.Generator(device=device).manual_seed(0)
    spec = train_augment(stage.augment)
    train_step(model, objective, optimizer, train_transform(images, spec, gen), labels, amp="bf16",
               channels_last=True)  # first call: lazy initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                terms, _ = train_step(model, objective, optimizer, train_transform(images, spec, gen), labels,
                                      amp="bf16", channels_last=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "synchroniz" in str(w.message)]
    assert not syncs, "host synchronisations in the step:\n" + "\n".join(syncs)
    assert math.isfinite(float(terms["total"]))


def test_bf16_extraction_matches_float32():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", base_width=16), 10, load_pretrained=False).to(device)
    images = torch.randint(0, 256, (48, 3, 64, 32), dtype=torch.uint8, device=device)
    spec = AugmentSpec(height=64, width=32)
    ref, _ = extract_features(model, images, spec, device=device, batch_size=16)
    fast, _ = extract_features(model, images, spec, device=device, batch_size=16, amp="bf16", channels_last=True)
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    cos = torch.nn.functional.cosine_similarity(fast, ref, dim=1)
    assert cos.min() > 0.99, cos.min()


def test_bf16_channels_last_stages_on_cuda(tiny_dataset, tmp_path: Path):
    _, manifest = tiny_dataset
    raw = {
        "dataset": "synthetic",
        "model": "tiny",
        "stage1": {"epochs": 2, "num_identities": 4, "num_instances": 2, "augment": {"height": 64, "width": 32},
                   "schedule": {"warmup_epochs": 1, "milestones": [1]}, **FAST},
        "stage2": {"epochs": 2, "anchors": {"update": "momentum"}},
    }
    exp = build_experiment("tiny", raw, MODELS)
    assert exp.stage2.device == "cuda" and exp.stage2.amp == "bf16"  # inherited from stage 1
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    train_stage(StageSpec("stage1", manifest, exp.model, exp.stage1, exp.features, exp.validation, s1))
    h1 = pd.read_csv(s1 / "history.csv")
    assert list(h1["epoch"]) == [1, 2]
    assert h1["loss_total"].map(math.isfinite).all()
    assert 0 <= h1["mAP"].iloc[-1] <= 1
    h2 = train_stage(StageSpec("stage2", manifest, exp.model, exp.stage2, exp.features, exp.validation, s2,
                               init_model=s1 / "model.pt"))
    assert list(h2["epoch"]) == [1, 2]
    assert (h2["loss_anchor"] > 0).all() and h2["loss_total"].map(math.isfinite).all()
    # The model file is device-independent: it loads on the CPU.
    model = ModelFile.load(s2 / "model.pt").build()
    assert next(model.parameters()).device.type == "cpu"


def _tiny_step_setup(capturable: bool, model_cfg: ModelConfig = ModelConfig(backbone="resnet18", base_width=8)):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(model_cfg, 10, load_pretrained=False).to(device)
    objective = Objective(LossConfig(), 10, model.branch_feature_dim).to(device)
    stage = StageConfig()  # warm-up schedule: the lr changes every epoch
    optimizer = build_optimizer(list(model.named_parameters()), stage.optimizer, fused=True, capturable=capturable)
    return model, objective, optimizer, build_scheduler(optimizer, stage.schedule)


def _twin_steps(num_batches: int, model_cfg: ModelConfig = ModelConfig(backbone="resnet18", base_width=8)):
    """Random batches, their labels, and two identical set-ups: (model, objective, optimizer, scheduler)
    for eager steps and the same with a capturable optimizer for a GraphedStep."""
    torch.backends.cudnn.benchmark = False
    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    batches = [torch.randn(8, 3, 64, 32, device=device, generator=gen) for _ in range(num_batches)]
    labels = torch.arange(4, device=device).repeat_interleave(2)
    return (batches, labels, _tiny_step_setup(capturable=False, model_cfg=model_cfg),
            _tiny_step_setup(capturable=True, model_cfg=model_cfg))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager-model", "compiled-model"])
def test_graphed_step_follows_the_eager_step_and_the_schedule(compiled: bool):
    batches, labels, eager, graphed = _twin_steps(8)
    eager_model, eager_obj, eager_opt, eager_sched = eager
    graph_model, graph_obj, graph_opt, graph_sched = graphed
    # A compiled model compiles during the warm-up; the capture then holds its fused kernels.
    step = GraphedStep(torch.compile(graph_model) if compiled else graph_model, graph_obj, graph_opt, warmup=2)
    eager_losses, graph_losses = [], []
    for i, x in enumerate(batches):
        if i in (3, 6):  # an epoch boundary: the scheduler fills the lr tensors in place
            eager_sched.step()
            graph_sched.step()
        eager_losses.append(float(train_step(eager_model, eager_obj, eager_opt, x, labels)[0]["total"]))
        graph_losses.append(float(step(x, labels)[0]["total"]))
    assert step.graph is not None  # the last steps were replays
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3)
    start = _tiny_step_setup(capturable=False)[0].state_dict()
    for (name, a), b in zip(eager_model.state_dict().items(), graph_model.state_dict().values()):
        if not compiled:
            assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), name
        elif a.is_floating_point():
            # Fused kernels sum in another order, and Adam turns tiny gradient differences into
            # per-weight steps of up to lr, so compare each tensor's whole update instead.
            update, other = a - start[name], b - start[name]
            assert torch.linalg.vector_norm(other - update) <= 0.05 * torch.linalg.vector_norm(update) + 1e-6, name


def test_graphed_step_recaptures_when_the_lr_tensors_are_replaced():
    # A loaded optimizer state brings new lr tensors; the captured step would go on reading the old ones.
    device = torch.device("cuda")
    batches, labels, (eager_model, eager_obj, eager_opt, _), (graph_model, graph_obj, graph_opt, _) = _twin_steps(7)
    step = GraphedStep(graph_model, graph_obj, graph_opt, warmup=2)
    eager_losses, graph_losses = [], []
    for i, x in enumerate(batches):
        if i == 4:
            for group in eager_opt.param_groups:
                group["lr"] = 1e-3
            for group in graph_opt.param_groups:
                group["lr"] = torch.tensor(1e-3, device=device)
        eager_losses.append(float(train_step(eager_model, eager_obj, eager_opt, x, labels)[0]["total"]))
        graph_losses.append(float(step(x, labels)[0]["total"]))
        if i == 4:
            assert step.graph is None  # noticed: an eager step, then a new capture
    assert step.graph is not None and step.lrs[0] is graph_opt.param_groups[0]["lr"]
    assert graph_losses == pytest.approx(eager_losses, rel=1e-3)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager-model", "compiled-model"])
def test_graphed_step_recaptures_when_the_model_switches_a_term_on(compiled: bool):
    # ABD-Net's feature-orthogonality term starts at an epoch (set_epoch): the trainer then resets
    # the graphed step, whose next call runs eagerly (a compiled model recompiles there, outside
    # any capture) before it captures the model's new behaviour.
    cfg = ModelConfig(family="abd", backbone="resnet18", base_width=8, embed_dim=32, of_start_epoch=1)
    batches, labels, (eager_model, eager_obj, eager_opt, _), (graph_model, graph_obj, graph_opt, _) = _twin_steps(
        8, cfg)
    for model in (eager_model, graph_model):  # the two would draw different dropout masks
        for module in model.modules():
            if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)):
                module.p = 0.0
    step = GraphedStep(torch.compile(graph_model) if compiled else graph_model, graph_obj, graph_opt, warmup=2)
    eager_losses, graph_losses = [], []
    for i, x in enumerate(batches):
        epoch = 0 if i < 4 else 1
        eager_model.set_epoch(epoch)
        graph_model.set_epoch(epoch)
        if i == 4:
            step.reset()
        eager_terms = train_step(eager_model, eager_obj, eager_opt, x, labels)[0]
        graph_terms = step(x, labels)[0]
        assert set(graph_terms) == set(eager_terms)
        eager_losses.append(float(eager_terms["total"]))
        graph_losses.append(float(graph_terms["total"]))
        if i == 4:
            assert step.graph is None  # the call after a reset is an eager warm-up
    assert step.graph is not None and "of" in graph_terms
    assert graph_losses == pytest.approx(eager_losses, rel=2e-3)


def test_graphed_stage_trains_like_the_eager_one(tiny_dataset, tmp_path: Path):
    _, manifest = tiny_dataset
    histories = {}
    for graphed in (False, True):
        raw = {"dataset": "synthetic", "model": "tiny",
               "stage1": {"epochs": 2, "num_identities": 4, "num_instances": 2, "device": "cuda",
                          "augment": {"height": 64, "width": 32}, "cuda_graph": graphed,
                          "schedule": {"warmup_epochs": 1, "milestones": [1]}}}
        exp = build_experiment("tiny", raw, MODELS)
        out = tmp_path / str(graphed)
        train_stage(StageSpec("stage1", manifest, exp.model, exp.stage1, exp.features, exp.validation, out))
        histories[graphed] = pd.read_csv(out / "history.csv")
    eager, graph = histories[False], histories[True]
    assert list(graph["lr"]) == pytest.approx(list(eager["lr"]))
    assert list(graph["loss_total"]) == pytest.approx(list(eager["loss_total"]), rel=1e-3)
    assert graph["mAP"].iloc[-1] == pytest.approx(eager["mAP"].iloc[-1], abs=0.02)


def test_decoding_workers_fork_from_a_process_that_uses_cuda(tiny_dataset):
    from clusteralign.data.images import load_images

    _, manifest = tiny_dataset
    paths = manifest["path"].tolist()
    conv = torch.nn.Conv2d(3, 8, 3).cuda()
    conv(torch.randn(2, 3, 16, 16, device="cuda")).sum().item()  # a live context, cuDNN and its threads
    # The workers only decode; they never touch the CUDA state they inherit.
    assert torch.equal(load_images(paths, (32, 16), num_workers=4), load_images(paths, (32, 16), num_workers=0))
