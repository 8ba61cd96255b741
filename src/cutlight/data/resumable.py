"""A training loader whose order and randomness can be resumed at any batch.

Resuming a run exactly needs the data of the remaining batches to be what the uninterrupted run would have seen.
Three pieces make that so:

* :class:`ResumableSampler` draws each epoch's order from ``(seed, epoch)`` alone (a private generator, never the
  global RNG), shards it over DDP ranks like ``DistributedSampler`` (whose subclass it is, so Lightning keeps it),
  and can start an epoch part-way (``state_dict`` / ``load_state_dict``: seed, epoch, next sample);
* every sample also gets its own seed from that order; :class:`SeededItems` loads item ``(index, seed)`` with the
  torch RNG seeded from it, so random crops, flips and pairings depend on neither the worker count nor what else
  drew random numbers before (the model's patch sampling, a callback);
* :class:`ResumableLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict`` (Lightning saves them in
  checkpoints and restores them before the first batch) and a private generator for its worker base seed.

Which sample comes next is told to the sampler by the training loop (``TranslationModule`` calls
:func:`note_batch` at each batch start), because a loader prefetches and cannot know what was consumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """Yields ``(index, item_seed)`` for this rank's shard of each epoch, from sample ``start`` on.

    Args:
        dataset: sized dataset.
        shuffle: random order per epoch (else 0, 1, 2, ...; item seeds are random either way).
        seed: base seed; default ``torch.initial_seed()`` (what ``seed_everything`` set), read without drawing;
            under DDP rank 0's seed is used by every rank.
        num_replicas, rank: default: the initialized process group, else 1 and 0.
    """

    def __init__(self, dataset: Dataset, shuffle: bool = True, seed: int | None = None,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        rank = rank if rank is not None else dist.get_rank() if distributed else 0
        seed = int(torch.initial_seed() if seed is None else seed) % 2**62
        if distributed and num_replicas > 1:  # one order for all ranks, even when they were seeded differently
            shared = [seed]
            dist.broadcast_object_list(shared, src=0)
            seed = shared[0]
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0  # samples of this epoch's shard already consumed (set by load_state_dict)
        self._next = (0, 0)  # (epoch, start) of the sample after the current batch (set by advance)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def order(self, epoch: int) -> tuple[list[int], list[int]]:
        """(dataset indices, item seeds) of this rank's shard of ``epoch``: ``len(self)`` of each."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        n = len(self.dataset)
        indices = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(2**62, (n,), generator=g)
        pad = self.total_size - n  # as DistributedSampler: repeat the first samples so ranks get equal shares
        indices = torch.cat([indices, indices.repeat(-(-pad // n))[:pad]]) if pad else indices
        seeds = torch.cat([seeds, seeds.repeat(-(-pad // n))[:pad]]) if pad else seeds
        sl = slice(self.rank, self.total_size, self.num_replicas)
        return indices[sl].tolist(), seeds[sl].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, seeds = self.order(self.epoch)
        return iter(list(zip(indices, seeds))[self.start:])

    def advance(self, epoch: int, consumed: int, last: bool = False) -> None:
        """Record that ``consumed`` samples of ``epoch`` (this rank's shard) will be done after the current batch;
        ``last``: it is the epoch's last batch (the next one is the first of ``epoch + 1``)."""
        self._next = (epoch + 1, 0) if last or consumed >= len(self) else (epoch, consumed)

    def state_dict(self) -> dict[str, int]:
        epoch, start = self._next
        return {"seed": self.seed, "epoch": epoch, "start": start, "num_samples": len(self)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch, self.start = int(state["epoch"]), int(state["start"])
        if state.get("num_samples", len(self)) != len(self):  # another dataset or world size: restart the epoch
            self.start = 0
        self._next = (self.epoch, self.start)


class SeededItems(Dataset):
    """``dataset[index]`` computed with the torch RNG seeded from the item's own seed (restored afterwards)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class ResumableLoader(DataLoader):
    """``DataLoader(SeededItems(dataset), sampler=ResumableSampler(dataset, shuffle))`` with ``drop_last`` batches;
    its ``state_dict`` is the sampler's. Other ``DataLoader`` keywords pass through."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int | None = None, **kwargs):
        sampler = kwargs.pop("sampler", None) or ResumableSampler(dataset, shuffle=shuffle, seed=seed)
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))  # worker base seed
        kwargs.setdefault("drop_last", True)
        items = dataset if isinstance(dataset, SeededItems) else SeededItems(dataset)
        super().__init__(items, batch_size=batch_size, sampler=sampler, **kwargs)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


def note_batch(loader: object, epoch: int, batch_idx: int, last: bool = False) -> None:
    """Tell ``loader``'s :class:`ResumableSampler` (if it has one) that batch ``batch_idx`` of ``epoch`` is being
    trained (``last``: the epoch's last), so a checkpoint written after it resumes at the next batch. Any other
    loader is left alone."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, ResumableSampler):
        sampler.advance(epoch, (batch_idx + 1) * (getattr(loader, "batch_size", None) or 1), last)
