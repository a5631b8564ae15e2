"""Export a model to a deployment format: ONNX (onnxruntime) or a ``torch.export`` program.

``visattn export --model NAME --format onnx --out model.onnx`` (or ``--weights PATH``) calls these.

What is exported is the model's evaluation forward, ``(B, C, H, W) -> logits (B, K)``, with a dynamic
batch dimension (``dynamic_batch=True``) and a fixed ``(C, H, W)``:

* models whose forward returns a dict (RAM) export its ``"logits"``; RAM exports in its deterministic
  evaluation mode (``mc_samples=1``: the glimpses go to the policy means); with ``mc_samples > 1`` it
  samples from a ``torch.Generator`` at every call and is refused (``NotExportableError``);
* dasNet exports with the policy ``theta = mu`` (its ``eval`` forward, deterministic);
* SE blocks take their plain (unfused) composition while an exporter records the forward
  (``visattn.attention.se.exporting``): same values, operations every exporter translates, in the
  form onnxruntime runs best (``AveragePool -> Conv 1x1 -> Relu -> Conv 1x1 -> Sigmoid -> Resize ->
  Mul``: no layout reorders; ``SqueezeExcite._export_gate``);
* ``nn.AdaptiveMaxPool2d`` whose output size does not divide its input size (the ST-CNN's
  localisation net, 7 -> 4) has no ONNX translation; the exported copy computes the same bins
  explicitly (``_BinnedAdaptiveMaxPool2d``), values equal.

The model given is not modified (a copy is exported). ONNX goes through the ``torch.export``-based
exporter (``dynamo=True``, needs ``onnxscript``); ``dynamo=False`` selects the legacy TorchScript one.
Both need the ``export`` extra: ``pip install visattn[export]``.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visattn._validate import check_type

__all__ = [
    "NotExportableError",
    "default_input_shape",
    "export_onnx",
    "export_program",
    "exportable_module",
    "export_from_args",
    "not_exportable_reason",
    "run_onnx",
]

DEFAULT_OPSET = 18


class NotExportableError(ValueError):
    """The model's forward cannot be exported; the message says why."""


def not_exportable_reason(model: nn.Module) -> str | None:
    """Why ``model`` cannot be exported, or ``None`` when it can.

    >>> import visattn
    >>> not_exportable_reason(visattn.create_model("ram", mc_samples=4))[:38]
    'ram with mc_samples=4 samples its glim'
    >>> not_exportable_reason(visattn.create_model("resnet20")) is None
    True
    """
    declared = getattr(model, "not_exportable", None)  # a model's own reason (e.g. DVAN's stopped backbone)
    if isinstance(declared, str):
        return declared
    m = getattr(model, "mc_samples", 1)
    if isinstance(m, int) and m > 1:
        return (
            f"ram with mc_samples={m} samples its glimpse locations from a torch.Generator at every call;"
            " build it with mc_samples=1 (deterministic: glimpses at the policy means) to export"
        )
    return None


class _BinnedAdaptiveMaxPool2d(nn.Module):
    """``nn.AdaptiveMaxPool2d`` as explicit bins ``[floor(i H / o), ceil((i + 1) H / o))`` (PyTorch's
    own bins), for exporters: ``(B, C, H, W) -> (B, C, oh, ow)`` with ``H, W`` fixed at export."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        size = self.output_size
        oh, ow = (size, size) if isinstance(size, int) else size
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:
            return nn.functional.adaptive_max_pool2d(x, (oh, ow))
        rows = []
        for i in range(oh):
            r0, r1 = (i * h) // oh, math.ceil((i + 1) * h / oh)
            cols = [
                x[:, :, r0:r1, (j * w) // ow : math.ceil((j + 1) * w / ow)].amax(dim=(2, 3))
                for j in range(ow)
            ]
            rows.append(torch.stack(cols, dim=-1))
        return torch.stack(rows, dim=-2)


class _Logits(nn.Module):
    """The wrapped model's logits: its output tensor, or the ``"logits"`` entry of a dict output (a pose
    model's last-stack ``"heatmaps"`` ``(B, J, h, w)`` when it has no logits)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, dict):
            return out["logits"] if "logits" in out else out["heatmaps"]
        return out


def exportable_module(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` ready for an exporter: ``(B, C, H, W) -> logits (B, K)``.

    Raises ``NotExportableError`` with the reason for a model whose forward cannot be exported.
    """
    check_type(model, "model", nn.Module)
    reason = not_exportable_reason(model)
    if reason is not None:
        raise NotExportableError(f"not exportable: {reason}")
    net = copy.deepcopy(model).eval()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.AdaptiveMaxPool2d and not child.return_indices:
                setattr(parent, name, _BinnedAdaptiveMaxPool2d(child.output_size))
    return _Logits(net).eval()


def default_input_shape(model: nn.Module, batch: int = 2, size: int = 32) -> tuple[int, int, int, int]:
    """``(batch, C, H, W)``: the trained weights' input size (``model.pretrained_card``), else the model's
    ``input_spec`` size, else ``size`` (at least the minimum the model accepts).

    >>> import visattn
    >>> default_input_shape(visattn.create_model("st_cnn_mnist"))
    (2, 1, 28, 28)
    """
    card = getattr(model, "pretrained_card", None)
    spec = getattr(model, "input_spec", None)
    if isinstance(card, dict) and "input_size" in card and "in_chans" in card:
        return (batch, int(card["in_chans"]), *map(int, card["input_size"]))  # type: ignore[return-value]
    if spec is None:
        raise ValueError(f"model: {type(model).__name__} has no input_spec; pass input_shape explicitly")
    if spec.size is not None:
        h, w = spec.size
    else:
        h, w = max(size, spec.min_size[0]), max(size, spec.min_size[1])
    return (batch, spec.in_chans, h, w)


def _example(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    if len(input_shape) != 4 or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be 4 positive ints (B, C, H, W), got {input_shape!r}")
    p = next(iter(model.parameters()), None)
    return torch.randn(*input_shape, device=p.device if p is not None else "cpu")


def _dynamic(dynamic_batch: bool, batch: int) -> dict[str, Any] | None:
    if not dynamic_batch:
        return None
    if batch < 2:
        raise ValueError(f"input_shape: a dynamic batch needs an example batch of at least 2, got {batch}")
    return {"x": {0: torch.export.Dim("batch", min=1, max=1 << 16)}}


def export_program(
    model: nn.Module,
    input_shape: tuple[int, int, int, int],
    *,
    dynamic_batch: bool = True,
    path: str | Path | None = None,
) -> torch.export.ExportedProgram:
    """``torch.export`` the model's eval forward (see the module docstring); save it to ``path`` (``.pt2``)
    when given (``torch.export.load`` reads it back).

    >>> import visattn
    >>> ep = export_program(visattn.create_model("mnist_cnn"), (2, 1, 28, 28))
    >>> ep.module()(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """
    net = exportable_module(model)
    x = _example(net, input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(net, (x,), dynamic_shapes=_dynamic(dynamic_batch, input_shape[0]))
    if path is not None:
        torch.export.save(ep, str(path))
    return ep


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int, int],
    *,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
) -> Path:
    """Write the model's eval forward as ONNX to ``path``: input ``"x" (B, C, H, W)``, output
    ``"logits" (B, K)``, ``B`` dynamic when ``dynamic_batch``. Returns the path. One self-contained
    file (weights inside, no external-data file beside it).

    ``dynamo=True`` (default) exports through ``torch.export``; if onnxscript's graph optimiser fails on
    the exported graph (it does on dasNet's batch-dependent split), the unoptimised graph is written
    (onnxruntime optimises it when loading). ``dynamo=False``: the legacy TorchScript exporter.
    Needs ``pip install visattn[export]``.
    """
    check_type(dynamic_batch, "dynamic_batch", bool)
    check_type(opset, "opset", int)
    net = exportable_module(model)
    x = _example(net, input_shape)
    path = Path(path)
    common: dict[str, Any] = {"input_names": ["x"], "output_names": ["logits"], "opset_version": opset}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if not dynamo:
            axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(net, (x,), str(path), dynamo=False, dynamic_axes=axes, **common)
            return path
        options = {
            "dynamo": True,
            "dynamic_shapes": _dynamic(dynamic_batch, input_shape[0]),
            "external_data": False,
            "verbose": False,
            **common,
        }
        try:
            torch.onnx.export(net, (x,), str(path), **options)
        except Exception as e:  # onnxscript's optimiser (not the export) failed: write the plain graph
            if "optimiz" not in str(e).lower() and "PassError" not in type(e).__name__:
                raise
            torch.onnx.export(net, (x,), str(path), optimize=False, **options)
    return path


def run_onnx(path: str | Path, x: torch.Tensor, *, threads: int | None = None) -> torch.Tensor:
    """Run the ONNX file at ``path`` on ``x`` with onnxruntime (CPU); ``threads``: intra-op threads.

    Needs ``pip install visattn[export]``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"x": x.detach().cpu().numpy()})[0])


def _model_from_args(args: Any, kwargs: dict[str, Any]) -> nn.Module:
    """The model ``visattn export`` names: ``--model`` (random or ``--pretrained`` weights) or ``--weights``."""
    import visattn

    if args.pretrained is not None:
        if args.model is None or args.weights is not None:
            raise ValueError("--pretrained needs --model and no --weights")
        return visattn.create_model(args.model, pretrained=args.pretrained, **kwargs)
    if args.weights is None:
        if args.model is None:
            raise ValueError("--model or --weights is needed")
        if args.model not in visattn.list_models():
            raise ValueError(f"--model: unknown model {args.model!r}; valid names: {visattn.list_models()}")
        return visattn.create_model(args.model, **kwargs)
    weights = Path(args.weights)
    if weights.suffix == ".safetensors" and weights.with_suffix(".json").is_file():
        if args.model is None:
            from visattn.models._pretrained import load_card

            args.model = load_card(weights.with_suffix(".json"))["model"]
        return visattn.create_model(args.model, pretrained=weights, **kwargs)
    from visattn.train import load_weights, safe_load

    ck = safe_load(weights)
    saved = ck.get("config", {}) if isinstance(ck, dict) else {}
    name = args.model or saved.get("model")
    if name is None:
        raise ValueError(f"--model is needed: {args.weights!r} holds no visattn config")
    if name not in visattn.list_models():
        raise ValueError(f"--model: unknown model {name!r}; valid names: {visattn.list_models()}")
    model_kwargs = dict(saved.get("model_kwargs") or {}) if name == saved.get("model") else {}
    model_kwargs.update(kwargs)
    model = visattn.create_model(name, **model_kwargs)
    load_weights(model, str(weights), strict=True)  # a num_classes/in_chans mismatch: --model-arg
    return model


def export_from_args(args: Any, model_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``visattn export --format onnx|torch_export``: export and return a summary (printed as JSON).

    ``model_kwargs``: the builder options of ``--model-arg``."""
    model = _model_from_args(args, model_kwargs)
    shape = default_input_shape(model)
    if args.input_size is not None:
        shape = (shape[0], shape[1], int(args.input_size[0]), int(args.input_size[1]))
    out = Path(args.out)
    want = {"onnx": ".onnx", "torch_export": ".pt2"}[args.format]
    if out.suffix != want:
        raise ValueError(f"--out must end in {want} for --format {args.format}, got {args.out!r}")
    dynamic = not args.static_batch
    if args.format == "onnx":
        export_onnx(model, out, shape, dynamic_batch=dynamic)
    else:
        export_program(model, shape, dynamic_batch=dynamic, path=out)
    return {
        "format": args.format,
        "out": str(out),
        "input": ["B" if dynamic else shape[0], *shape[1:]],
        "bytes": out.stat().st_size,
    }
