"""A distributed evaluation sampler that shards without padding.

``torch.utils.data.DistributedSampler`` pads the index list so every rank gets the same number of samples,
which repeats a few images; the repeats would be counted twice by FID/KID. :class:`UnpaddedDistributedSampler`
gives rank ``r`` of ``W`` the indices ``r, r + W, r + 2W, ...`` (a strided shard, every index exactly once over
all ranks, no shuffle). It subclasses ``DistributedSampler`` so that Lightning, which only injects its own
sampler when the DataLoader's sampler is *not* a ``DistributedSampler``, leaves it in place.

Consequence under DDP: ranks may run a different number of validation batches (they differ by at most one).
Per-step collectives (``self.log(..., sync_dist=True)`` inside ``validation_step``) would then hang; accumulate
in a metric object (torchmetrics syncs its states once at ``compute``) instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class UnpaddedDistributedSampler(DistributedSampler):
    """Strided, non-padding, non-shuffling shard of ``range(len(dataset))`` for rank ``rank`` of ``num_replicas``.

    ``num_replicas`` and ``rank`` default to the initialized process group (as in ``DistributedSampler``).
    ``len(sampler)`` is this rank's shard size, ``ceil((len(dataset) - rank) / num_replicas)``.
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
