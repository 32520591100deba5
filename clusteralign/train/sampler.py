"""P x K identity batch sampler: P identities per batch, K images of each."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class SamplerConfigError(ValueError):
    """The labels cannot be batched with the requested P x K layout."""


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU ``torch.Generator`` whose state depends only on ``(seed, epoch)``."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative integers, got seed={seed}, epoch={epoch}.")
    # SeedSequence mixes the pair properly, so (seed, epoch) pairs never collide the way
    # seed + epoch would.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _EpochSampler(Sampler[list[int]]):
    """What both batch samplers share: their whole state is (seed, epoch), split over ranks."""

    def __init__(self, what: str, seed: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise SamplerConfigError(f"{what} needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
        if seed < 0:
            raise SamplerConfigError(f"{what} seed must be a non-negative integer, got {seed}.")
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        if epoch < 0:
            raise ValueError(f"sampler epoch must be a non-negative integer, got {epoch}.")
        self.epoch = int(epoch)


class PKSampler(_EpochSampler):
    """Batch sampler yielding ``P * K`` dataset indices: K images of each of P distinct identities.

    The trainer indexes its in-memory image cache with each batch (``list(sampler)`` per
    epoch). A batch lists its identities one after another, K consecutive indices each.
    An identity with fewer than K images contributes all of them plus random repeats
    (sampling with replacement) to reach K.

    An epoch is the strong baseline's (its RandomIdentitySampler's, which the 120-epoch
    schedule assumes): every identity's images are shuffled and cut into chunks of K
    (remainder dropped; small identities give one chunk); batches draw P identities
    uniformly from those with chunks left, until fewer than P remain. About
    ``num_images / (P * K)`` batches; the exact count varies slightly by epoch and is what
    ``len()`` returns for the current epoch.

    Randomness comes only from a generator seeded by ``(seed, epoch)``: the sampler's
    whole state is those two numbers. Call :meth:`set_epoch` before each epoch (as with
    ``DistributedSampler``); a new sampler given the same seed and ``set_epoch(e)``
    reproduces epoch ``e`` exactly, which is how a resumed run continues.

    Distributed: with ``world_size > 1`` every rank builds the same global batches of
    ``world_size * P`` distinct identities and rank ``r`` takes identities
    ``[r*P, (r+1)*P)`` of each, so ranks never share an identity within a step and all
    ranks get the same number of batches.
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_identities: int = 16,
        num_instances: int = 4,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_identities < 1 or num_instances < 1:
            raise SamplerConfigError(
                f"PKSampler needs num_identities >= 1 and num_instances >= 1, got num_identities={num_identities}, "
                f"num_instances={num_instances}."
            )
        super().__init__("PKSampler", seed, rank, world_size)
        label_array = np.asarray([int(x) for x in labels], dtype=np.int64)
        if label_array.size == 0:
            raise SamplerConfigError("PKSampler got an empty label list; the training split has no images.")
        pids, inverse = np.unique(label_array, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(pids)))[:-1]
        # Identities in ascending pid order, each with its dataset indices ascending: the
        # layout does not depend on the order of the labels' first appearance.
        self._indices: list[np.ndarray] = np.split(order, bounds)
        self.pids: list[int] = [int(p) for p in pids]
        self.num_identities = num_identities
        self.num_instances = num_instances
        group = world_size * num_identities
        if len(self.pids) < group:
            raise SamplerConfigError(
                f"PKSampler needs at least world_size x num_identities = {world_size} x {num_identities} = {group} "
                f"distinct identities, but the labels hold only {len(self.pids)}."
            )
        self._plan_cache: tuple[tuple[int, int], list[list[np.ndarray]]] | None = None

    def _chunks(self, generator: torch.Generator, ident: int) -> list[np.ndarray]:
        idx = self._indices[ident]
        n = len(idx)
        k = self.num_instances
        perm = torch.randperm(n, generator=generator)
        if n < k:
            extra = torch.randint(n, (k - n,), generator=generator)
            return [idx[torch.cat([perm, extra]).numpy()]]
        count = n // k
        # One gather, then rows of a NumPy array: a tensor index per chunk was most of an epoch's plan.
        return list(idx[perm[: count * k].numpy()].reshape(count, k))

    def _global_plan(self) -> list[list[np.ndarray]]:
        """Global batches for the current epoch: each a list of world_size*P chunks of K indices."""
        key = (self.seed, self.epoch)
        if self._plan_cache is not None and self._plan_cache[0] == key:
            return self._plan_cache[1]
        g = epoch_generator(self.seed, self.epoch)
        group = self.world_size * self.num_identities
        num_ids = len(self.pids)
        plan: list[list[np.ndarray]] = []
        queues = [deque(self._chunks(g, ident)) for ident in range(num_ids)]
        available = list(range(num_ids))
        while len(available) >= group:
            picks = torch.randperm(len(available), generator=g)[:group].tolist()
            selected = [available[i] for i in picks]
            plan.append([queues[ident].popleft() for ident in selected])
            if any(not queues[ident] for ident in selected):
                available = [ident for ident in available if queues[ident]]
        self._plan_cache = (key, plan)
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        p = self.num_identities
        lo, hi = self.rank * p, (self.rank + 1) * p
        for chunks in self._global_plan():
            yield np.concatenate(chunks[lo:hi]).tolist()

    def __len__(self) -> int:
        return len(self._global_plan())

    def __repr__(self) -> str:
        return (
            f"PKSampler(identities={len(self.pids)}, P={self.num_identities}, K={self.num_instances}, "
            f"seed={self.seed}, epoch={self.epoch}, rank={self.rank}, "
            f"world_size={self.world_size})"
        )


class RandomBatchSampler(_EpochSampler):
    """Batch sampler yielding plain shuffled batches of ``batch_size`` dataset indices.

    Each epoch is one seeded permutation of every training image cut into batches, the last
    incomplete batch dropped, as a shuffling ``DataLoader`` with ``drop_last=True`` draws them
    (the paper's reference code trains stage 2, which has no triplet loss, this way). Like
    :class:`PKSampler`, its whole state is ``(seed, epoch)``, so a resumed run continues exactly.

    Distributed: every rank cuts the same permutation into global batches of
    ``world_size * batch_size`` and rank ``r`` takes the ``r``-th slice of each.
    """

    def __init__(self, num_images: int, batch_size: int = 64, seed: int = 0, *, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise SamplerConfigError(f"random batches need batch_size >= 1, got {batch_size}.")
        super().__init__("RandomBatchSampler", seed, rank, world_size)
        group = world_size * batch_size
        if num_images < group:
            raise SamplerConfigError(
                f"batch_size: random batches of {batch_size} images"
                + (f" on each of {world_size} processes" if world_size > 1 else "")
                + f" need at least {group} training images, but the training split holds {num_images}."
            )
        self.num_images = num_images
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        group = self.world_size * self.batch_size
        order = torch.randperm(self.num_images, generator=epoch_generator(self.seed, self.epoch))
        order = order[: len(self) * group].view(len(self), self.world_size, self.batch_size)
        yield from order[:, self.rank].tolist()

    def __len__(self) -> int:
        return self.num_images // (self.world_size * self.batch_size)

    def __repr__(self) -> str:
        return (f"RandomBatchSampler(images={self.num_images}, batch_size={self.batch_size}, seed={self.seed}, "
                f"epoch={self.epoch}, rank={self.rank}, world_size={self.world_size})")


def batch_sampler(kind: str, labels: Sequence[int], *, num_identities: int, num_instances: int, batch_size: int,
                  seed: int, rank: int = 0, world_size: int = 1) -> PKSampler | RandomBatchSampler:
    """The training batch sampler a stage's `sampler` setting names: "pk" or "random"."""
    if kind == "pk":
        return PKSampler(labels, num_identities, num_instances, seed=seed, rank=rank, world_size=world_size)
    if kind == "random":
        return RandomBatchSampler(len(labels), batch_size, seed=seed, rank=rank, world_size=world_size)
    raise SamplerConfigError(f"sampler must be 'pk' or 'random', got {kind!r}")
