"""P x K identity sampler: composition, determinism, resume, replacement, rank partition."""

from __future__ import annotations

from collections import Counter

import pytest

from clusteralign.train.sampler import PKSampler, SamplerConfigError


def make_labels() -> list[int]:
    """40 identities with 1..13 images, interleaved the way a manifest would list them."""
    sizes = {pid: 1 + (pid * 7) % 13 for pid in range(100, 140)}
    labels: list[int] = []
    remaining = dict(sizes)
    while remaining:
        for pid in list(remaining):
            labels.append(pid)
            remaining[pid] -= 1
            if remaining[pid] == 0:
                del remaining[pid]
    return labels


LABELS = make_labels()
P, K = 4, 4


def epoch_batches(sampler: PKSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batch_composition() -> None:
    sampler = PKSampler(LABELS, num_identities=P, num_instances=K, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == P * K
        assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in batch)
        blocks = [batch[j * K : (j + 1) * K] for j in range(P)]
        block_pids = []
        for block in blocks:
            pids = {LABELS[i] for i in block}
            assert len(pids) == 1, "each block of K indices is one identity"
            block_pids.append(pids.pop())
        assert len(set(block_pids)) == P, "identities within a batch are distinct"


def test_an_epoch_uses_images_about_once() -> None:
    sampler = PKSampler(LABELS, num_identities=P, num_instances=K, seed=0)
    used = [i for batch in sampler for i in batch]
    counts = Counter(used)
    small = {pid for pid, n in Counter(LABELS).items() if n < K}
    # Images of identities with >= K images appear at most once per epoch.
    assert all(c == 1 for i, c in counts.items() if LABELS[i] not in small)
    chunk_total = sum(max(1, n // K) for n in Counter(LABELS).values())
    # Batches stop when fewer than P identities have chunks left: at most a few are lost.
    assert len(sampler) * P <= chunk_total
    assert len(sampler) * P >= chunk_total - (P - 1) * (13 // K)


def test_deterministic_and_seed_dependent() -> None:
    a = PKSampler(LABELS, P, K, seed=3)
    b = PKSampler(list(LABELS), P, K, seed=3)
    c = PKSampler(LABELS, P, K, seed=4)
    assert list(a) == list(b)
    assert list(a) == list(a), "iterating twice in one epoch gives the same batches"
    assert list(a) != list(c)


def test_epochs_differ_and_resume_with_set_epoch() -> None:
    run = PKSampler(LABELS, P, K, seed=7)
    history = [epoch_batches(run, e) for e in range(4)]
    assert len({tuple(map(tuple, h)) for h in history}) == 4
    resumed = PKSampler(LABELS, P, K, seed=7)
    resumed.set_epoch(2)
    assert len(resumed) == len(history[2])
    assert list(resumed) == history[2]


def test_small_identities_sampled_with_replacement() -> None:
    labels = [0] * 1 + [1] * 3 + [2] * 6 + [3] * 5
    sampler = PKSampler(labels, num_identities=4, num_instances=4, seed=0)
    batch = list(sampler)[0]
    blocks = {labels[batch[j * 4]]: batch[j * 4 : (j + 1) * 4] for j in range(4)}
    assert blocks[0] == [0, 0, 0, 0]
    assert sorted(set(blocks[1])) == [1, 2, 3], "every image of a small identity is used"
    assert len(set(blocks[2])) == 4 and len(set(blocks[3])) == 4, "no repeats when enough images"


def test_rank_partition_is_disjoint() -> None:
    world = 3
    ranks = [
        PKSampler(LABELS, 3, K, seed=5, rank=r, world_size=world)
        for r in range(world)
    ]
    for s in ranks:
        s.set_epoch(1)
    lengths = {len(s) for s in ranks}
    assert len(lengths) == 1 and lengths.pop() > 0
    for step in zip(*(list(s) for s in ranks)):
        id_sets = [{LABELS[i] for i in batch} for batch in step]
        assert all(len(ids) == 3 for ids in id_sets)
        assert len(set().union(*id_sets)) == world * 3, "ranks share no identity within a step"


def test_config_errors() -> None:
    with pytest.raises(SamplerConfigError, match="at least world_size x num_identities = 2 x 32 = 64"):
        PKSampler(LABELS, num_identities=32, num_instances=4, world_size=2)
    with pytest.raises(SamplerConfigError, match="empty"):
        PKSampler([], 2, 2)
    with pytest.raises(SamplerConfigError, match="rank"):
        PKSampler(LABELS, 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="epoch"):
        PKSampler(LABELS, 2, 2).set_epoch(-1)
