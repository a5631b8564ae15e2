"""Building a run's model from its config: create, load starting weights, retrofit; check the data fits."""

from __future__ import annotations

from typing import Any

from torch import nn

from visattn.checkpoint import load_weights
from visattn.train.config import TrainConfig

__all__ = ["build_model", "check_model_fits", "data_info"]


def build_model(cfg: TrainConfig, *, num_classes: int, in_chans: int) -> nn.Module:
    """Create ``cfg.model``, load ``cfg.weights`` (weights-only) and apply ``cfg.retrofit``.

    The starting weights are those of the model *before* the retrofit (fine-tuning a pretrained
    network with inserted attention). To rebuild a trained run (weights saved *after* the
    retrofit) use :func:`visattn.train.load_run`.

    >>> m = build_model(TrainConfig(model="mnist_cnn", epochs=1), num_classes=10, in_chans=1)
    >>> type(m).__name__
    'MnistCNN'
    """
    from visattn.models import create_model

    model = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs)
    if cfg.weights:
        load_weights(model, cfg.weights, strict=True)
    if cfg.retrofit:
        from visattn.retrofit import retrofit

        retrofit(model, attention=cfg.retrofit, **cfg.retrofit_kwargs)
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
        )
    if spec.size is not None and tuple(spec.size) != (h, w):
        raise ValueError(f"model {name!r} needs {spec.size[0]}x{spec.size[1]} images, the data has {h}x{w}")


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
