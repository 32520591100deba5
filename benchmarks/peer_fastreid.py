"""fast-reid's training step: its bag-of-tricks ResNet-50 (configs/Base-bagtricks.yml) and its data loader.

The PyPI package `fastreid` 1.4.0, installed with `--no-deps` (it pins torch 1.13). Two
work-arounds make it run on Python 3.11 and torch 2.x, both restoring names the newer versions
removed, with the values the old ones had: `collections.Mapping` (gone in Python 3.10, used by
`fastreid.data.build` and `fastreid.evaluation.testing`) and `torch._six.string_classes` (gone
in torch 2.0, used by the data loader's collate function). And `fastreid.engine`'s
`__init__` imports its evaluation package (faiss, and more of the above) only to re-export
it: the training loop module `fastreid.engine.train_loop` is imported without running that
`__init__` (the package is entered in sys.modules with its real path and no eager imports).
Nothing of fast-reid's own code is changed.

What runs is what fast-reid's `DefaultTrainer` builds from the config, minus its hooks
(checkpoints, evaluation, logging): `build_reid_train_loader(cfg)` (the registered dataset,
NaiveIdentitySampler, its transforms, DataLoaderX with its CUDA prefetch stream),
`build_model(cfg)`, `build_optimizer(cfg, model)` (contiguous parameters), and `AMPTrainer`
(AMP is on in Base-bagtricks.yml); one timed step is `run_step()`: next batch, forward and
losses under autocast, scaled backward, the losses read back, optimizer step.

On the CPU, fast-reid's AMP and DataLoaderX need CUDA: `SimpleTrainer` (float32) runs instead,
fed by a plain DataLoader built from the same dataset, sampler, transforms and collate function.
"""

from __future__ import annotations

import collections
import collections.abc
import sys
import time
import types
from importlib.metadata import version
from pathlib import Path

import torch

from peer_common import Result, Settings, Split, read_splits, timed_steps

DATASET_NAME = "ClusterAlignSynthetic"

# The values of fast-reid's configs/Base-bagtricks.yml (JDAI-CV/fast-reid, commit 07b8251) that
# differ from its defaults, but the schedule's (which do not change a step's cost) and the
# ImageNet weights (nothing is downloaded; every toolkit trains from scratch here).
BAGTRICKS = {
    "MODEL.META_ARCHITECTURE": "Baseline",
    "MODEL.BACKBONE.NAME": "build_resnet_backbone",
    "MODEL.BACKBONE.NORM": "BN",
    "MODEL.BACKBONE.LAST_STRIDE": 1,
    "MODEL.BACKBONE.FEAT_DIM": 2048,
    "MODEL.BACKBONE.WITH_IBN": False,
    "MODEL.BACKBONE.PRETRAIN": False,
    "MODEL.HEADS.NAME": "EmbeddingHead",
    "MODEL.HEADS.NORM": "BN",
    "MODEL.HEADS.WITH_BNNECK": True,
    "MODEL.HEADS.POOL_LAYER": "GlobalAvgPool",
    "MODEL.HEADS.NECK_FEAT": "before",
    "MODEL.HEADS.CLS_LAYER": "Linear",
    "MODEL.LOSSES.NAME": ("CrossEntropyLoss", "TripletLoss"),
    "MODEL.LOSSES.CE.EPSILON": 0.1,
    "MODEL.LOSSES.CE.SCALE": 1.0,
    "MODEL.LOSSES.TRI.MARGIN": 0.3,
    "MODEL.LOSSES.TRI.HARD_MINING": True,
    "MODEL.LOSSES.TRI.NORM_FEAT": False,
    "MODEL.LOSSES.TRI.SCALE": 1.0,
    "INPUT.REA.ENABLED": True,
    "INPUT.REA.PROB": 0.5,
    "INPUT.FLIP.ENABLED": True,
    "INPUT.PADDING.ENABLED": True,
    "DATALOADER.SAMPLER_TRAIN": "NaiveIdentitySampler",
    "SOLVER.AMP.ENABLED": True,
    "SOLVER.OPT": "Adam",
    "SOLVER.BASE_LR": 0.00035,
    "SOLVER.WEIGHT_DECAY": 0.0005,
    "CUDNN_BENCHMARK": True,
}


def import_fastreid() -> None:
    """Make fast-reid 1.4.0's training modules importable on Python 3.11 and torch 2.x (module docstring)."""
    if not hasattr(collections, "Mapping"):
        collections.Mapping = collections.abc.Mapping
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)  # torch 1.13's value
        sys.modules["torch._six"] = six
    if "fastreid.engine" not in sys.modules:
        import fastreid

        engine = types.ModuleType("fastreid.engine")
        engine.__path__ = [str(Path(fastreid.__file__).parent / "engine")]
        sys.modules["fastreid.engine"] = engine


def register_dataset(splits: dict[str, Split]) -> None:
    """Register the manifest's splits with fast-reid as DATASET_NAME (as its Market1501 names them)."""
    from fastreid.data.datasets import DATASET_REGISTRY
    from fastreid.data.datasets.bases import ImageDataset

    # Training identities and cameras as strings prefixed by the dataset's name, as fast-reid's
    # own readers give them (its CommDataset then numbers them).
    train = [(path, f"synthetic_{pid}", f"synthetic_{cam}") for path, pid, cam, _ in splits["train"].rows]
    query = [(path, pid, cam) for path, pid, cam, _ in splits["query"].rows]
    gallery = [(path, pid, cam) for path, pid, cam, _ in splits["gallery"].rows]

    class ClusterAlignSynthetic(ImageDataset):
        def __init__(self, root: str = "", **kwargs) -> None:
            super().__init__(train, query, gallery, **kwargs)

    DATASET_REGISTRY.register(ClusterAlignSynthetic)


def build_config(settings: Settings, num_classes: int):
    """Base-bagtricks.yml's values, with this run's batch, input size, backbone, workers and device."""
    from fastreid.config import get_cfg

    cuda = settings.device == "cuda"
    values = {**BAGTRICKS,
              "MODEL.BACKBONE.DEPTH": settings.backbone.removeprefix("resnet") + "x",
              # Base-bagtricks' 2048 is ResNet-50's; the basic-block ResNets end with 512 channels.
              "MODEL.BACKBONE.FEAT_DIM": 2048 if settings.backbone == "resnet50" else 512,
              "MODEL.HEADS.NUM_CLASSES": num_classes,
              "MODEL.DEVICE": settings.device,
              "INPUT.SIZE_TRAIN": [settings.height, settings.width],
              "DATASETS.NAMES": (DATASET_NAME,),
              "DATALOADER.NUM_INSTANCE": settings.num_instances,
              "DATALOADER.NUM_WORKERS": settings.workers,
              "SOLVER.IMS_PER_BATCH": settings.batch,
              "SOLVER.AMP.ENABLED": cuda and BAGTRICKS["SOLVER.AMP.ENABLED"]}
    cfg = get_cfg()
    cfg.merge_from_list([item for pair in values.items() for item in pair])
    return cfg


def cpu_loader(cfg) -> torch.utils.data.DataLoader:
    """fast-reid's train loader without DataLoaderX, whose prefetch stream needs CUDA."""
    from fastreid.data.build import _train_loader_from_config, fast_batch_collator

    # The function build_reid_train_loader's config decorator calls: the same dataset and sampler.
    parts = _train_loader_from_config(cfg)
    batches = torch.utils.data.BatchSampler(parts["sampler"], parts["total_batch_size"], drop_last=True)
    return torch.utils.data.DataLoader(parts["train_set"], batch_sampler=batches, num_workers=parts["num_workers"],
                                       collate_fn=fast_batch_collator)


def measure(settings: Settings) -> Result:
    t_start = time.perf_counter()
    import_fastreid()
    from fastreid.data import build_reid_train_loader
    from fastreid.engine.train_loop import AMPTrainer, SimpleTrainer
    from fastreid.modeling.meta_arch import build_model
    from fastreid.solver import build_optimizer
    from fastreid.utils.events import EventStorage

    torch.manual_seed(settings.seed)
    splits = read_splits(settings.manifest)
    register_dataset(splits)
    cfg = build_config(settings, splits["train"].num_ids)
    cuda = settings.device == "cuda"
    torch.backends.cudnn.benchmark = cuda and cfg.CUDNN_BENCHMARK  # as fast-reid's default_setup does
    loader = build_reid_train_loader(cfg) if cuda else cpu_loader(cfg)
    model = build_model(cfg)
    optimizer, param_wrapper = build_optimizer(cfg, model)
    amp = cfg.SOLVER.AMP.ENABLED
    trainer = (AMPTrainer if amp else SimpleTrainer)(model, loader, optimizer, param_wrapper)
    with EventStorage(0) as storage:
        t_timed, seconds, _ = timed_steps(lambda: trainer.run_step() or 0.0, settings)
        # fast-reid times its own wait for each batch (data_time): the timed steps' are the last ones.
        waits = [value for value, _ in storage.history("data_time").values()][-settings.steps:]
    return Result(
        toolkit="fastreid", version=version("fastreid"),
        recipe=(f"Base-bagtricks {settings.backbone} (last stride 1, BNNeck), "
                f"{'AMP fp16' if amp else 'fp32 (AMP needs CUDA)'}, "
                f"{'DataLoaderX' if cuda else 'DataLoader (DataLoaderX needs CUDA)'} + NaiveIdentitySampler, "
                f"{settings.workers} workers, flip+pad+REA"),
        warmup=f"{settings.warmup} steps", steps=settings.steps, images=settings.steps * settings.batch,
        seconds=seconds, setup_seconds=t_timed - t_start, train_images=len(loader.dataset),
        train_ids=loader.dataset.num_classes, data_wait=sum(waits) / seconds)
