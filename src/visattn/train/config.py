"""Typed training configuration: one dataclass, loaded from YAML and ``--set key=value`` overrides.

Unknown keys and values of the wrong type raise ``ValueError``/``TypeError`` naming the key and
the value received, before any work starts. The resolved config is saved beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visattn._validate import check_choice, check_positive, check_range

__all__ = [
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "parse_yaml",
    "did_you_mean",
    "config_help",
]


def did_you_mean(name: str, valid: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``name`` (difflib), else ``""``.

    >>> did_you_mean("reductoin", ["reduction", "identity_init"])
    " (did you mean 'reduction'?)"
    """
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error raises ``ValueError`` naming ``source``, line and column.

    >>> parse_yaml("lr: 0.1", "cfg.yaml")
    {'lr': 0.1}
    >>> parse_yaml("lr: [", "cfg.yaml")
    Traceback (most recent call last):
    ...
    ValueError: cfg.yaml, line 1, column 6: invalid YAML: expected the node content, but found '<stream end>' (while parsing a flow node)
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
        extra = f" ({context})" if context else ""
        if context and cmark is not None and mark is not None and cmark.line != mark.line:
            extra = f" ({context} opened at line {cmark.line + 1}, column {cmark.column + 1})"
        raise ValueError(f"{source}{where}: invalid YAML: {problem}{extra}") from None


@dataclass
class TrainConfig:
    """Everything one training run needs. Field names are the YAML keys and ``--set`` keys.

    ``visattn train --help-config`` prints every key with its type, default and the line below.

    Attributes:
        task: ``classification`` (cross-entropy, top-1) or ``pose`` (heatmap MSE over visible joints, PCK@0.2;
            ``visattn.train.pose``); selects the loss, the metric and the loaders.
        model: registered model name (``visattn list models``).
        model_kwargs: options of the model builder (``--model-arg key=value``).
        weights: initial weights, a ``.pt`` (loaded weights-only) or ``.safetensors`` file.
        retrofit: attention type inserted into the model (identity init) before training.
        retrofit_kwargs: options of the inserted attention (e.g. ``reduction``; ``targets``, ``input_size``).
        retrofit_warmup_epochs: epochs that train only the inserted attention before everything.
        data: registered dataset name (``visattn list datasets``).
        data_dir: local path of the dataset (folder or ``.npz``).
        data_kwargs: options of the dataset builder (e.g. ``size`` for image folders).
        download: allow torchvision to download the dataset.
        val_fraction: share of the training set held out for validation (0: no validation).
        augment: training augmentation: ``default`` (the dataset's preset) or ``none``.
        limit_train: keep only this many training samples (a seeded subset), for CPU budgets.
        limit_eval: keep only this many validation and test samples each (a seeded subset).
        num_workers: DataLoader worker processes (0: load in the main process).
        epochs: training epochs.
        batch_size: global training batch (split over torchrun processes).
        eval_batch_size: validation/test batch per process (default: max(batch per process, 256)).
        optimizer: ``sgd`` or ``adamw``.
        lr: base learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum (SGD).
        weight_decay: weight decay (decoupled for AdamW).
        schedule: learning-rate schedule per step: ``cosine``, ``step`` or ``constant``.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        step_epochs: epochs at which the ``step`` schedule multiplies the rate by ``step_gamma``.
        step_gamma: factor of the ``step`` schedule.
        label_smoothing: label smoothing of the cross-entropy loss.
        grad_clip: clip the gradient norm to this value (none: no clipping).
        nonfinite: on a non-finite loss, ``raise`` or ``skip`` the step.
        amp: bf16 autocast.
        channels_last: channels-last memory format.
        compile: ``torch.compile`` the model.
        sync_bn: SyncBatchNorm under torchrun on GPUs.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds the weights, the validation split and the data order.
        deterministic: ``torch.use_deterministic_algorithms`` (warn only).
        out: run folder (checkpoints, ``config.yaml``, metrics).
        resume: continue from ``out/last.pt``.
        max_steps_per_epoch: stop each epoch after this many steps.
        log_every: steps between updates of the progress bar's loss.
        progress: show progress bars and per-epoch log lines.
        tensorboard: write TensorBoard scalars to ``out/tb``.
        tb_images_every: steps between TensorBoard attention images (needs ``tensorboard``).
        test_at_end: evaluate the best-on-validation weights on the test set once at the end.
        select_initial: let the starting weights compete for ``best.pt`` (none: when starting from weights).
    """

    # what to train
    task: str = "classification"  # or "pose" (heatmaps, PCK; visattn.train.pose)
    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    retrofit: str | None = None
    retrofit_kwargs: dict[str, Any] = field(default_factory=dict)
    retrofit_warmup_epochs: int = 0
    # data
    data: str = "fashion_mnist"
    data_dir: str | None = None
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    download: bool = False
    val_fraction: float = 0.1
    augment: str = "default"
    limit_train: int | None = None
    limit_eval: int | None = None
    num_workers: int = 0
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: list[int] = field(default_factory=list)
    step_gamma: float = 0.1
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    nonfinite: str = "raise"
    # speed switches
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    device: str = "auto"
    # bookkeeping
    seed: int = 0
    deterministic: bool = False
    out: str = "runs/train"
    resume: bool = False
    max_steps_per_epoch: int | None = None
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = False
    tb_images_every: int = 0
    test_at_end: bool = True
    select_initial: bool | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; raise naming the field and the value."""
        for name, hint in _hints().items():
            _check_type(name, getattr(self, name), hint)
        check_positive(self.epochs, "epochs", integer=True)
        check_positive(self.batch_size, "batch_size", integer=True)
        if self.eval_batch_size is not None:
            check_positive(self.eval_batch_size, "eval_batch_size", integer=True)
        check_positive(self.lr, "lr")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        check_range(self.momentum, "momentum", 0.0, 1.0)
        check_range(self.val_fraction, "val_fraction", 0.0, 0.9)
        check_range(self.label_smoothing, "label_smoothing", 0.0, 1.0)
        check_positive(self.warmup_epochs, "warmup_epochs", allow_zero=True)
        check_choice(self.task, "task", ("classification", "pose"))
        check_choice(self.optimizer, "optimizer", ("sgd", "adamw"))
        check_choice(self.schedule, "schedule", ("cosine", "step", "constant"))
        check_choice(self.nonfinite, "nonfinite", ("raise", "skip"))
        check_choice(self.augment, "augment", ("default", "none"))
        check_positive(self.retrofit_warmup_epochs, "retrofit_warmup_epochs", integer=True, allow_zero=True)
        check_positive(self.num_workers, "num_workers", integer=True, allow_zero=True)
        check_positive(self.log_every, "log_every", integer=True)
        check_positive(self.tb_images_every, "tb_images_every", integer=True, allow_zero=True)
        if self.tb_images_every and not self.tensorboard:
            raise ValueError(
                f"tb_images_every={self.tb_images_every} needs tensorboard=true, got tensorboard=false"
            )
        for opt in ("limit_train", "limit_eval", "max_steps_per_epoch"):
            if getattr(self, opt) is not None:
                check_positive(getattr(self, opt), opt, integer=True)
        if self.grad_clip is not None:
            check_positive(self.grad_clip, "grad_clip")


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise ``TypeError`` unless ``value`` fits the annotation ``hint`` (ints accepted for floats)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        for a in args:
            if a is type(None):
                continue
            try:
                _check_type(name, value, a)
                return
            except TypeError:
                continue
        raise TypeError(
            f"config key {name!r} must be {_type_name(hint)}, got {type(value).__name__} {value!r}"
        )
    base = origin or hint
    ok = isinstance(value, base) and not (isinstance(value, bool) and base in (int, float))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise TypeError(
            f"config key {name!r} must be {_type_name(hint)}, got {type(value).__name__} {value!r}"
        )
    if base is list:
        (item,) = typing.get_args(hint) or (Any,)
        if item is not Any:
            for v in value:
                _check_type(f"{name}[]", v, item)


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain dict of the config (YAML- and ``weights_only``-safe)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a config from a dict; unknown keys raise ``ValueError`` naming them."""
    if not isinstance(data, dict):
        raise TypeError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        hint = did_you_mean(unknown[0], known)
        raise ValueError(f"unknown config key(s) {unknown}{hint}; valid keys: {sorted(known)}")
    return TrainConfig(**data)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (validated when turned into a ``TrainConfig``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    data = parse_yaml(p.read_text(), f"config file {str(p)!r}") or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as YAML; ``a.b=v`` sets a key inside dict field ``a``).

    >>> apply_overrides({}, ["lr=0.05", "model_kwargs.norm=group"])
    {'lr': 0.05, 'model_kwargs': {'norm': 'group'}}
    """
    out = dict(data)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = parse_yaml(raw, f"--set {item!r}, value {raw!r}") if raw.strip() else None
        top, _, sub = key.partition(".")
        if top not in known:
            raise ValueError(
                f"unknown config key {top!r} in --set {item!r}{did_you_mean(top, known)}; "
                f"valid keys: {sorted(known)}"
            )
        if sub:
            inner = dict(out.get(top) or {})
            inner[sub] = value
            out[top] = inner
        else:
            out[top] = value
    return out


def _field_docs() -> dict[str, str]:
    """``{key: meaning}`` from the ``Attributes:`` section of ``TrainConfig``'s docstring."""
    doc = TrainConfig.__doc__ or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out: dict[str, str] = {}
    key = None
    for line in section.splitlines():
        text = line.strip()
        head, sep, rest = text.partition(": ")
        if sep and head.isidentifier() and line.startswith(" " * 8) and not line.startswith(" " * 12):
            key = head
            out[key] = rest.strip()
        elif key and text:
            out[key] += " " + text
    return out


def config_help() -> str:
    """Every config key with its type, default and meaning (``visattn train --help-config``).

    >>> print(config_help().splitlines()[0])
    TrainConfig keys (YAML keys, --set KEY=VALUE; a.b=v sets key b of dict field a):
    """
    docs = _field_docs()
    hints = _hints()
    rows = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
        rows.append(
            (
                f.name,
                _type_name(hints[f.name]),
                yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip(),
                docs.get(f.name, ""),
            )
        )
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = ["TrainConfig keys (YAML keys, --set KEY=VALUE; a.b=v sets key b of dict field a):"]
    lines += [f"  {a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines).replace("``", "")
