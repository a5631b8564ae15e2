"""Building a run from its config: the data (splits and this process's loaders) and the model (create, load
starting weights, retrofit); checking that the data fit the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from visattn.train.config import TrainConfig
from visattn.train.distributed import DistInfo

__all__ = ["TrainData", "build_data", "build_model", "check_model_fits", "data_info"]


def build_model(
    cfg: TrainConfig, *, num_classes: int, in_chans: int, image_size: tuple[int, int] | None = None
) -> nn.Module:
    """Create ``cfg.model``, load ``cfg.weights`` (weights-only) and apply ``cfg.retrofit`` (checked to
    fit the data's ``image_size`` before the model is changed).

    The starting weights are those of the model *before* the retrofit (fine-tuning a pretrained
    network with inserted attention). To rebuild a trained run (weights saved *after* the
    retrofit) use :func:`visattn.train.load_run`.

    >>> m = build_model(TrainConfig(model="mnist_cnn", epochs=1), num_classes=10, in_chans=1)
    >>> type(m).__name__
    'MnistCNN'
    """
    from visattn.models import load_model

    model = load_model(
        cfg.model, cfg.weights or None, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs
    )
    if cfg.retrofit:
        from visattn.retrofit import retrofit

        options = dict(cfg.retrofit_kwargs)
        if image_size is not None:
            options.setdefault("input_size", tuple(image_size))
        retrofit(model, attention=cfg.retrofit, **options)
    return model


def check_model_fits(model: nn.Module, name: str, in_chans: int, image_size: tuple[int, int]) -> None:
    """Raise ``ValueError`` before training when the data's images do not fit the model's input spec."""
    spec = getattr(model, "input_spec", None)
    if spec is None:
        return
    h, w = image_size
    if spec.in_chans != in_chans:
        raise ValueError(f"model {name!r} takes {spec.in_chans}-channel images, the data has {in_chans}")
    if h < spec.min_size[0] or w < spec.min_size[1]:
        raise ValueError(
            f"model {name!r} needs images of at least {spec.min_size[0]}x{spec.min_size[1]}, the data has {h}x{w}"
            " (resize the data: data_kwargs size for image folders)"
        )
    if spec.size is not None and tuple(spec.size) != (h, w):
        raise ValueError(
            f"model {name!r} needs {spec.size[0]}x{spec.size[1]} images, the data has {h}x{w}"
            " (resize the data: data_kwargs size for image folders)"
        )


def data_info(splits: Any) -> dict[str, Any]:
    """What a model must know of its training data, saved with its weights (``weights_only``-safe types).

    Keys: ``num_classes``, ``in_chans``, ``image_size`` ``[H, W]``, ``mean``, ``std`` (the
    normalisation) and ``class_names`` (or ``None``).
    """
    names = getattr(splits, "class_names", None)
    return {
        "num_classes": int(splits.num_classes),
        "in_chans": int(splits.in_chans),
        "image_size": [int(s) for s in splits.image_size],
        "mean": [float(m) for m in splits.mean],
        "std": [float(s) for s in splits.std],
        "class_names": None if names is None else [str(n) for n in names],
    }


@dataclass
class TrainData:
    """A run's dataset splits and this process's loaders (training: seeded ``DistributedSampler``)."""

    splits: Any
    loaders: Any
    train_sampler: DistributedSampler
    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None


def _shard(loader: DataLoader | None, info: DistInfo, batch_size: int) -> DataLoader | None:
    """An evaluation loader over this rank's exact share (no padding, so counts stay exact)."""
    if loader is None or not info.distributed:
        return loader
    ds: Any = loader.dataset
    return DataLoader(
        Subset(ds, range(info.rank, len(ds), info.world_size)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )


def build_data(
    cfg: TrainConfig, info: DistInfo, *, make_loaders: Callable[..., Any] | None = None
) -> TrainData:
    """Load ``cfg.data`` and build the loaders of this process: training batches ``batch_size / world_size``
    from a ``DistributedSampler`` seeded by ``cfg.seed`` (``set_epoch`` each epoch), and validation / test
    over this rank's exact share. ``make_loaders``: a task's own loader builder (the pose task's), with
    ``visattn.data.make_loaders``'s signature; default that one."""
    from visattn.data import load_dataset
    from visattn.data import make_loaders as default_make_loaders

    if make_loaders is None:
        make_loaders = default_make_loaders

    if cfg.batch_size % info.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
            f"{info.world_size} processes"
        )
    splits = load_dataset(
        cfg.data,
        data_dir=cfg.data_dir,
        download=cfg.download and info.is_main,
        seed=cfg.seed,
        **cfg.data_kwargs,
    )
    local_bs = cfg.batch_size // info.world_size
    eval_bs = cfg.eval_batch_size or max(local_bs, 256)
    loaders = make_loaders(
        splits,
        batch_size=local_bs,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        augment=cfg.augment,
        num_workers=cfg.num_workers,
        distributed=info.distributed,
        limit_train=cfg.limit_train,
        limit_eval=cfg.limit_eval,
        eval_batch_size=eval_bs,
    )
    train_sampler: DistributedSampler = DistributedSampler(
        loaders.train.dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    train_loader = DataLoader(
        loaders.train.dataset,
        batch_size=local_bs,
        sampler=train_sampler,
        drop_last=True,
        num_workers=cfg.num_workers,
        collate_fn=loaders.train.collate_fn,
        pin_memory=info.device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    return TrainData(
        splits,
        loaders,
        train_sampler,
        train_loader,
        _shard(loaders.val, info, eval_bs),
        _shard(loaders.test, info, eval_bs),
    )
