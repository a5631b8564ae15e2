"""Train / validation / test ``DataLoader`` s from a dataset's :class:`DatasetSplits`.

The validation split is carved from the *training* set by a permutation drawn from a
``torch.Generator`` seeded with ``seed`` (never from the test set), so checkpoint and
hyper-parameter selection never see test images. A dataset with an official validation split
(``splits.extras["val"]``, e.g. Flowers-102) uses that instead.

Batches are ``x: float32 (B, C, H, W)``, normalised as ``(x / 255 - mean) / std``, and
``y: int64 (B,)``. In-memory datasets (:class:`ImageTensorDataset`) are fetched a batch at a
time (``Dataset.__getitems__``) and augmented as whole batches (:mod:`visattn.data.transforms`).

Distributed (``distributed=True``, under ``torchrun`` after ``init_process_group``): every
loader uses ``torch.utils.data.DistributedSampler``; train shuffles with ``seed`` and the engine
must call ``loaders.train_sampler.set_epoch(epoch)`` each epoch. Validation and test are sharded
without shuffling and with ``drop_last=False``, so ``DistributedSampler`` pads the last shard by
repeating up to ``world_size - 1`` samples; the engine gathers (all-reduces) the metric sums
across ranks, and those few repeats are counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from visattn._validate import check_positive, check_range, check_type
from visattn.data._registry import DatasetSplits, ImageTensorDataset
from visattn.data.transforms import BatchTransform, pil_transform, resolve_augment

__all__ = ["Loaders", "make_loaders", "split_indices"]


@dataclass
class Loaders:
    """The three loaders plus what the engine needs to drive them.

    ``train_sampler`` is the ``DistributedSampler`` of the training loader (call
    ``set_epoch(epoch)`` on it every epoch) or ``None`` when not distributed. ``n_*`` count
    samples in each split over all ranks; ``augment`` is the resolved training preset.
    """

    train: DataLoader
    val: DataLoader | None
    test: DataLoader
    train_sampler: DistributedSampler | None
    n_train: int
    n_val: int
    n_test: int
    augment: str = "none"


def split_indices(
    n: int, val_fraction: float, seed: int, *, limit_train: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted, disjoint ``(train, val)`` index tensors.

    ``round(val_fraction * n)`` indices (at least 1 when ``val_fraction > 0``) taken from a
    permutation seeded with ``seed`` go to validation; ``limit_train`` keeps the first
    ``limit_train`` of the remaining permutation as the training part.

    >>> tr, va = split_indices(10, 0.2, seed=0)
    >>> len(tr), len(va), sorted(tr.tolist() + va.tolist()) == list(range(10))
    (8, 2, True)
    """
    check_positive(n, "n", integer=True)
    check_range(val_fraction, "val_fraction", 0.0, 1.0)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n_val >= n:
        raise ValueError(f"val_fraction={val_fraction} leaves no training samples out of n={n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, val = perm[n_val:], perm[:n_val]
    if limit_train is not None:
        check_positive(limit_train, "limit_train", integer=True)
        train = train[:limit_train]
    return train.sort().values, val.sort().values


class _View(Dataset):
    """Indices into a base dataset; PIL images go through a per-image stage to ``uint8 (C, H, W)``."""

    def __init__(self, base: Dataset, indices: torch.Tensor | None, pil_stage: Any = None) -> None:
        self.base = base
        self.indices = indices
        self.pil_stage = pil_stage

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else _len(self.base)

    def _index(self, i: int) -> int:
        return int(self.indices[i]) if self.indices is not None else i

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x, y = self.base[self._index(i)]
        if isinstance(x, Image.Image):
            if self.pil_stage is None:
                raise TypeError("dataset yields PIL images but no PIL transform was set")
            x = self.pil_stage(x)
        return x, int(y)

    def __getitems__(self, idx: list[int]) -> Any:
        if isinstance(self.base, ImageTensorDataset):
            ix = torch.as_tensor(idx, dtype=torch.long)
            if self.indices is not None:
                ix = self.indices[ix]
            return self.base.images[ix], self.base.labels[ix]
        return [self[i] for i in idx]


class _Collate:
    """Stacks a batch (or takes an already-batched pair) and applies the batch transform."""

    def __init__(self, transform: BatchTransform) -> None:
        self.transform = transform

    def __call__(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, tuple):
            x, y = batch
        else:
            x = torch.stack([torch.as_tensor(b[0]) for b in batch])
            y = torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
        return self.transform(x), y.long()


def _len(dataset: Dataset) -> int:
    return len(dataset)  # type: ignore[arg-type]


def _is_pil(dataset: Dataset) -> bool:
    return (
        not isinstance(dataset, ImageTensorDataset)
        and _len(dataset) > 0
        and isinstance(dataset[0][0], Image.Image)
    )  # type: ignore[arg-type]


def make_loaders(
    splits: DatasetSplits,
    *,
    batch_size: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: str = "default",
    num_workers: int = 0,
    distributed: bool = False,
    limit_train: int | None = None,
    drop_last: bool = True,
    eval_batch_size: int | None = None,
    limit_eval: int | None = None,
    pin_memory: bool = False,
) -> Loaders:
    """Build train/val/test loaders.

    Args:
        splits: from ``load_dataset``.
        batch_size: training batch per process.
        val_fraction: share of the training set held out for validation, in ``[0, 1)``; 0 gives
            ``val=None``. Ignored (beyond 0 meaning "no validation") when the dataset has an
            official validation split in ``splits.extras["val"]``.
        seed: seeds the validation split and the distributed shuffle.
        augment: training preset (``visattn.data.transforms.AUGMENT_PRESETS``); validation and test
            always get the plain evaluation transform.
        num_workers: ``DataLoader`` worker processes (0 loads in the main process).
        distributed: shard every loader with ``DistributedSampler`` (needs an initialised process group).
        limit_train: keep only this many training samples (a deterministic subset), for CPU budgets.
        drop_last: drop the last incomplete training batch.
        eval_batch_size: batch size of validation and test (default ``batch_size``).
        limit_eval: keep only this many validation and test samples (a seeded subset).
        pin_memory: passed to the ``DataLoader`` s.

    Returns:
        :class:`Loaders`; each yields ``x: float32 (B, C, H, W)``, ``y: int64 (B,)``.

    >>> from visattn.data import ImageTensorDataset, DatasetSplits
    >>> ds = ImageTensorDataset(torch.zeros(20, 1, 8, 8, dtype=torch.uint8), torch.arange(20) % 2)
    >>> sp = DatasetSplits("toy", ds, ds, 2, 1, (8, 8), (0.5,), (0.5,))
    >>> ld = make_loaders(sp, batch_size=4, val_fraction=0.2)
    >>> x, y = next(iter(ld.train))
    >>> x.shape, x.dtype, y.dtype, ld.n_train, ld.n_val
    (torch.Size([4, 1, 8, 8]), torch.float32, torch.int64, 16, 4)
    """
    check_type(splits, "splits", DatasetSplits)
    check_positive(batch_size, "batch_size", integer=True)
    check_positive(num_workers, "num_workers", integer=True, allow_zero=True)
    check_type(distributed, "distributed", bool)
    check_type(drop_last, "drop_last", bool)
    eval_bs = (
        batch_size
        if eval_batch_size is None
        else check_positive(eval_batch_size, "eval_batch_size", integer=True)
    )
    preset = resolve_augment(augment, splits.default_augment)
    if limit_eval is not None:
        check_positive(limit_eval, "limit_eval", integer=True)

    official_val = splits.extras.get("val") if val_fraction > 0 else None
    if official_val is not None:
        train_idx, _ = split_indices(_len(splits.train), 0.0, seed, limit_train=limit_train)
        val_idx = torch.arange(_len(official_val))
    else:
        train_idx, val_idx = split_indices(_len(splits.train), val_fraction, seed, limit_train=limit_train)
    test_idx = torch.arange(_len(splits.test))
    if limit_eval is not None:
        gen = torch.Generator().manual_seed(seed + 1)
        val_idx = val_idx[torch.randperm(len(val_idx), generator=gen)[:limit_eval]].sort().values
        test_idx = test_idx[torch.randperm(len(test_idx), generator=gen)[:limit_eval]].sort().values

    pil = _is_pil(splits.train)
    size = tuple(splits.image_size)
    train_pil = pil_transform(size, train=preset == "resized_crop_flip") if pil else None  # type: ignore[arg-type]
    eval_pil = pil_transform(size, train=False) if pil else None  # type: ignore[arg-type]
    train_tf = BatchTransform(splits.mean, splits.std, preset=preset, size=size, skip_crop=pil)  # type: ignore[arg-type]
    eval_tf = BatchTransform(splits.mean, splits.std, preset="none")

    train_view = _View(splits.train, train_idx, train_pil)
    val_view = (
        _View(official_val if official_val is not None else splits.train, val_idx, eval_pil)
        if len(val_idx) > 0
        else None
    )
    test_view = _View(splits.test, test_idx, eval_pil)
    if distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group "
                "(run under torchrun and call torch.distributed.init_process_group first)"
            )
    per_rank_train = len(train_idx) // (torch.distributed.get_world_size() if distributed else 1)
    if drop_last and per_rank_train < batch_size:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {per_rank_train} training samples per process, so "
            "drop_last=True would give no batches; lower batch_size or raise limit_train"
        )

    common: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": num_workers > 0,
    }
    train_sampler: DistributedSampler | None = (
        DistributedSampler(train_view, shuffle=True, seed=seed) if distributed else None
    )
    train = DataLoader(
        train_view,
        batch_size=batch_size,
        shuffle=train_sampler is None,
        sampler=train_sampler,
        drop_last=drop_last,
        collate_fn=_Collate(train_tf),
        **common,
    )

    def eval_loader(view: _View) -> DataLoader:
        sampler: DistributedSampler | None = (
            DistributedSampler(view, shuffle=False, drop_last=False) if distributed else None
        )
        return DataLoader(
            view, batch_size=eval_bs, shuffle=False, sampler=sampler, collate_fn=_Collate(eval_tf), **common
        )

    return Loaders(
        train=train,
        val=eval_loader(val_view) if val_view is not None else None,
        test=eval_loader(test_view),
        train_sampler=train_sampler,
        n_train=len(train_idx),
        n_val=len(val_idx),
        n_test=len(test_idx),
        augment=preset,
    )
