"""torchreid's training step: its ImageTripletEngine (softmax + triplet) fed by its ImageDataManager.

The PyPI package `torchreid` 0.2.5 (a repackaging of KaiyangZhou/deep-person-reid under
`torchreid.reid`) as its documentation's triplet example uses it: `ImageDataManager` with the
RandomIdentitySampler, `build_model(..., loss="triplet")`, Adam at 3e-4 and
`ImageTripletEngine(margin=0.3, weight_t=1, weight_x=1, label_smooth=True)`. One timed step is
what the engine's `train()` does per batch: the next batch from its DataLoader, then
`forward_backward` (forward, both losses, backward, optimizer step, the losses read back).
torchreid has no mixed precision, channels_last or compile; on a GPU it sets
cudnn.benchmark (scripts/main.py). The images come from the manifest through a dataset class
registered with torchreid, so it trains on exactly the files and identities the others do.
"""

from __future__ import annotations

import time
from importlib.metadata import version

import torch

from peer_common import Result, Settings, Split, next_batch, read_splits, timed_steps

# The augmentations of the strong baseline (flip, pad-and-crop, random erasing) in torchreid's
# names: its "random_crop" enlarges by 1/8 and crops back, its nearest to padding and cropping.
TRANSFORMS = ["random_flip", "random_crop", "random_erase"]
DATASET_NAME = "clusteralign_synthetic"


def register_dataset(splits: dict[str, Split]) -> None:
    """Register the manifest's splits with torchreid as DATASET_NAME."""
    from torchreid.reid.data import register_image_dataset
    from torchreid.reid.data.datasets.dataset import ImageDataset

    # torchreid wants training identities numbered from 0: the manifest's labels are.
    train = [(path, label, cam) for path, _, cam, label in splits["train"].rows]
    query = [(path, pid, cam) for path, pid, cam, _ in splits["query"].rows]
    gallery = [(path, pid, cam) for path, pid, cam, _ in splits["gallery"].rows]

    class ClusterAlignSynthetic(ImageDataset):
        def __init__(self, root: str = "", **kwargs) -> None:
            super().__init__(train, query, gallery, **kwargs)

    register_image_dataset(DATASET_NAME, ClusterAlignSynthetic)


def measure(settings: Settings) -> Result:
    t_start = time.perf_counter()
    import torchreid.reid as reid

    use_gpu = settings.device == "cuda"
    if use_gpu:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(settings.seed)
    register_dataset(read_splits(settings.manifest))
    manager = reid.data.ImageDataManager(
        root=settings.work_dir, sources=DATASET_NAME, height=settings.height, width=settings.width,
        transforms=TRANSFORMS, use_gpu=use_gpu, batch_size_train=settings.batch,
        num_instances=settings.num_instances, train_sampler="RandomIdentitySampler", workers=settings.workers)
    model = reid.models.build_model(settings.backbone, manager.num_train_pids, loss="triplet", pretrained=False,
                                    use_gpu=use_gpu)
    if use_gpu:
        model = model.cuda()
    optimizer = reid.optim.build_optimizer(model, optim="adam", lr=3e-4)
    engine = reid.engine.ImageTripletEngine(manager, model, optimizer, margin=0.3, weight_t=1, weight_x=1,
                                            use_gpu=use_gpu, label_smooth=True)
    engine.set_model_mode("train")
    batches = _endless(engine.train_loader)

    def step() -> float:
        data, waited = next_batch(batches)
        engine.forward_backward(data)
        return waited

    t_timed, seconds, waited = timed_steps(step, settings)
    return Result(
        toolkit="torchreid", version=version("torchreid"),
        recipe=(f"{settings.backbone} (last stride 2), fp32, ImageDataManager + RandomIdentitySampler, "
                f"{settings.workers} workers, transforms {'+'.join(TRANSFORMS)}"),
        warmup=f"{settings.warmup} steps", steps=settings.steps, images=settings.steps * settings.batch,
        seconds=seconds, setup_seconds=t_timed - t_start, train_images=len(engine.train_loader.dataset),
        train_ids=manager.num_train_pids, data_wait=waited / seconds)


def _endless(loader):
    """Batches epoch after epoch, a new pass of the DataLoader each epoch as the engine makes."""
    while True:
        yield from loader
