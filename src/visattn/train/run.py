"""``load_run``: rebuild a trained run's config, model (weights-only loading) and data from disk.

One function below the CLI (``visattn eval``), the report and the benchmarks. It accepts

* a run folder written by ``visattn train`` / ``fit`` (``config.yaml``, ``best.pt`` or ``last.pt``);
* a checkpoint file (``best.pt``/``last.pt``: weights, the config and ``data_info``);
* a ``.safetensors`` file; one written by ``visattn export`` carries the config and ``data_info``
  (class names, image size, normalisation) in its metadata, so it is scored exactly as trained.

The model is built as it was trained (``visattn.models.load_model``): ``create_model(model,
**model_kwargs)``, then the retrofit, then the weights, loaded strictly. The data are loaded with the run's own options unless
``overrides`` change them; the saved normalisation (``data_info``) replaces the dataset's, and an
image size other than the trained one is refused.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from visattn._validate import check_choice, check_positive
from visattn.checkpoint import read_metadata, safe_load
from visattn.models import load_model
from visattn.train.build import check_model_fits
from visattn.train.config import TrainConfig, config_from_dict

__all__ = ["LoadedRun", "load_run", "resolve_weights"]

_WEIGHT_FILES = ("best.pt", "last.pt")
# fields of a run's config that say how to rebuild its model and data (what `visattn export` keeps)
REBUILD_KEYS = (
    "model",
    "model_kwargs",
    "retrofit",
    "retrofit_kwargs",
    "data",
    "data_kwargs",
    "val_fraction",
    "seed",
)


@dataclass
class LoadedRun:
    """A run rebuilt from disk: its config, model (``eval()`` mode, weights loaded) and data.

    ``splits`` is ``None`` when loaded with ``load_data=False``. ``data_info`` is what the weights
    file recorded about the training data (``num_classes``, ``in_chans``, ``image_size``, ``mean``,
    ``std``, ``class_names``), ``{}`` for files that predate it.
    """

    config: TrainConfig
    model: nn.Module
    weights: Path
    splits: Any = None
    data_info: dict[str, Any] = field(default_factory=dict)

    def loader(self, split: str = "test", *, batch_size: int = 256, num_workers: int = 0) -> DataLoader:
        """The evaluation loader of ``split`` (``"test"`` or ``"val"``: the run's own validation split,
        carved from the training set with its ``val_fraction`` and ``seed``), no augmentation.

        Only evaluation loaders are built, so ``batch_size`` may exceed the training set.
        """
        from visattn.data import make_loaders

        check_choice(split, "split", ("test", "val"))
        check_positive(batch_size, "batch_size", integer=True)
        if self.splits is None:
            raise ValueError("this run was loaded with load_data=False; it has no data to evaluate on")
        cfg = self.config
        loaders = make_loaders(
            self.splits,
            batch_size=1,  # the training loader is not used: no training-batch check applies
            drop_last=False,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            augment="none",
            num_workers=num_workers,
            eval_batch_size=batch_size,
        )
        loader = loaders.test if split == "test" else loaders.val
        if loader is None:
            raise ValueError(
                f"split={split!r}: this run has no {split} split (val_fraction={cfg.val_fraction})"
            )
        return loader


def resolve_weights(path: str | Path) -> Path:
    """The weights file of ``path``: the file itself, or a run folder's ``best.pt`` (else ``last.pt``)."""
    p = Path(path)
    if p.is_dir():
        for name in _WEIGHT_FILES:
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"run folder {str(p)!r} holds no {' or '.join(_WEIGHT_FILES)}")
    if not p.is_file():
        raise FileNotFoundError(f"{str(p)!r} is neither a run folder nor a weights file")
    return p


def _saved(path: Path, weights: Path) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(saved config, data_info, loaded checkpoint or None) of a weights file (and its run folder)."""
    state: Any = None
    if weights.suffix == ".safetensors":
        meta = read_metadata(weights)
        config, info = dict(meta.get("config") or {}), dict(meta.get("data_info") or {})
    else:
        state = safe_load(weights)
        ck = state if isinstance(state, dict) else {}
        config = dict(ck["config"]) if isinstance(ck.get("config"), dict) else {}
        info = dict(ck["data_info"]) if isinstance(ck.get("data_info"), dict) else {}
    folder = path if path.is_dir() else None
    if not config and folder is not None and (folder / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    return config, info, state


def _merge(saved: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The config to rebuild: ``saved`` with ``overrides``; a different model or dataset drops the
    saved one's options (they belong to the other model/dataset)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {k: v for k, v in saved.items() if k in known}
    over = dict(overrides)
    config_from_dict(
        {k: v for k, v in over.items() if k not in ("model_kwargs", "data_kwargs", "retrofit_kwargs")}
    )
    if over.get("model") is not None and over["model"] != saved.get("model"):
        out.pop("model_kwargs", None)
    if over.get("data") is not None and over["data"] != saved.get("data"):
        dropped = {k: out.pop(k) for k in ("data_kwargs", "data_dir") if out.get(k)}
        if dropped.get("data_kwargs"):
            warnings.warn(
                f"data={over['data']!r} differs from the run's data={saved.get('data')!r}: its "
                f"data_kwargs {dropped['data_kwargs']} were dropped (set data_kwargs for {over['data']!r} if needed)",
                UserWarning,
                stacklevel=3,
            )
    if over.get("retrofit") is not None and over["retrofit"] != saved.get("retrofit"):
        out.pop("retrofit_kwargs", None)
    for key, value in over.items():
        if key in ("model_kwargs", "data_kwargs", "retrofit_kwargs") and value is not None:
            out[key] = {**(out.get(key) or {}), **dict(value)}
        elif value is not None:
            out[key] = value
    return out


def _fit_data(splits: Any, info: dict[str, Any], source: str) -> Any:
    """``splits`` with the trained normalisation; ``ValueError`` when the image size is not the trained one."""
    size = info.get("image_size")
    if size is not None and tuple(int(s) for s in size) != tuple(splits.image_size):
        h, w = (int(s) for s in size)
        raise ValueError(
            f"{source} was trained on {h}x{w} images but the data give "
            f"{splits.image_size[0]}x{splits.image_size[1]}; load them at the trained size "
            f"(e.g. data_kwargs.size={h}: --set data_kwargs.size={h} or --data-arg size={h})"
        )
    changes: dict[str, Any] = {}
    for key in ("mean", "std"):
        if info.get(key) is not None and len(info[key]) == len(getattr(splits, key)):
            changes[key] = tuple(float(v) for v in info[key])
    return dataclasses.replace(splits, **changes) if changes else splits


def load_run(
    path: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    load_data: bool = True,
    splits: Any = None,
) -> LoadedRun:
    """Rebuild a run from a run folder, a checkpoint or an (exported) ``.safetensors`` file.

    Args:
        path: a run folder (``best.pt``, else ``last.pt``) or a weights file.
        overrides: config fields replacing the saved ones, e.g. ``{"data": "npz", "data_dir": ...}``,
            ``{"data_kwargs": {"size": 32}}`` (dict fields are merged key by key). A ``model``,
            ``data`` or ``retrofit`` other than the saved one drops the saved one's options.
        load_data: load the dataset (needed for evaluation, and for the class count of files
            without ``data_info``).
        splits: an already loaded ``DatasetSplits`` to use instead of loading the data.

    Returns:
        :class:`LoadedRun` with the model in ``eval()`` mode on the CPU.

    Raises ``FileNotFoundError`` for a missing path, ``ValueError`` when the file holds no config
    and ``overrides`` name no model or data, when the weights do not fit the model, or when the
    data's images are not of the trained size.
    """
    p = Path(path)
    weights = resolve_weights(p)
    saved, info, state = _saved(p, weights)
    merged = _merge(saved, overrides or {})
    missing = [k for k in ("model", "data") if not merged.get(k)]
    if missing:
        raise ValueError(
            f"{str(weights)!r} holds no visattn config naming the {' and '.join(missing)}; "
            f"pass {' and '.join('--' + k for k in missing)} (overrides {missing})"
        )
    merged.update(weights=None, resume=False)
    cfg = config_from_dict(merged)
    if splits is None and load_data:
        from visattn.data import load_dataset

        splits = load_dataset(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed, **cfg.data_kwargs)
    if splits is not None:
        splits = _fit_data(splits, info, repr(str(weights)))
        num_classes, in_chans = splits.num_classes, splits.in_chans
    elif info.get("num_classes") and info.get("in_chans"):
        num_classes, in_chans = int(info["num_classes"]), int(info["in_chans"])
    else:
        raise ValueError(
            f"{str(weights)!r} records no class count or channels; load the data (load_data=True)"
        )
    # retrofit first, then load: a retrofitted network's weights hold the inserted modules
    model = load_model(
        cfg.model,
        state if state is not None else weights,
        num_classes=num_classes,
        in_chans=in_chans,
        retrofit=cfg.retrofit,
        retrofit_kwargs=cfg.retrofit_kwargs,
        source=repr(str(weights)),
        **cfg.model_kwargs,
    )
    if splits is not None:
        check_model_fits(model, cfg.model, splits.in_chans, splits.image_size)
    return LoadedRun(config=cfg, model=model.eval(), weights=weights, splits=splits, data_info=info)
