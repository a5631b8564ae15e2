"""Checkpoints: atomic writes, safe loads, RNG capture, ``.safetensors`` export with metadata.

Sits below ``visattn.models`` (a model builder may load weights, e.g. dasNet's base) and depends on
``torch``, ``numpy`` and ``safetensors`` only. Formerly ``visattn.train.checkpoint`` (still importable).

* Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over
  the target (``os.replace`` is atomic on POSIX), so a run killed at any moment leaves either the
  old or the new checkpoint on disk, never a torn one.
* Every load uses ``torch.load(..., weights_only=True)`` or safetensors: a checkpoint cannot run
  code. Checkpoints hold only tensors and plain Python containers (the numpy RNG state is stored
  as a tensor for that reason).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visattn._files import temp_beside

__all__ = [
    "atomic_save",
    "safe_load",
    "capture_rng",
    "restore_rng",
    "load_weights",
    "export_safetensors",
    "extract_state_dict",
    "load_state",
    "read_metadata",
]

METADATA_KEY = "visattn"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_load(path: str | Path, *, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.pt`` file with ``weights_only=True`` or a ``.safetensors`` file.

    Raises ``FileNotFoundError`` naming the path, and ``ValueError`` naming the path when the file
    is not a valid weights-only checkpoint (e.g. a pickle that would run code).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device=str(map_location))
        except Exception as e:  # SafetensorError on a file that is not safetensors
            raise ValueError(f"could not load {str(p)!r} as a safetensors file: {e}") from e
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError on torn files, ...
        raise ValueError(
            f"could not load {str(p)!r} as a weights-only checkpoint: {_what_is_wrong(p, e)}"
        ) from e


def _what_is_wrong(p: Path, err: Exception) -> str:
    """What is wrong with a ``.pt`` file ``torch.load`` failed on, in words (torch's own message can be
    a bare number, e.g. ``101`` for a file that is not a pickle at all)."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
    first = (str(err).strip().splitlines() or [""])[0][:200]
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return f"a torch.save zip archive of {size} bytes that is truncated or damaged ({first})"
    if head[:1] == b"\x80":
        return f"a pickle of {size} bytes that the weights-only loader refused (it may run code): {first}"
    return (
        f"not a PyTorch checkpoint: its {size} bytes start with {head!r}, not a zip archive (torch.save) "
        f"or a pickle ({type(err).__name__}: {first or 'no message'})"
    )


def extract_state_dict(obj: Any, *, source: str = "<weights>") -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded file: a visattn checkpoint (``obj["model"]``), a
    ``{"state_dict": ...}`` wrapper, or a plain state dict. DDP's ``module.`` prefix is removed."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source} does not hold a state dict of tensors")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> dict[str, list[str]]:
    """Load weights from ``path`` into ``model``; return ``{"missing": [...], "unexpected": [...]}``.

    With ``strict=True`` a mismatch raises ``ValueError`` listing the missing and unexpected keys.
    """
    return load_state(model, safe_load(path), source=repr(str(path)), strict=strict)


def load_state(
    model: nn.Module, obj: Any, *, source: str = "weights", strict: bool = True
) -> dict[str, list[str]]:
    """Load an already-loaded file's state dict (see :func:`extract_state_dict`) into ``model``.

    Shapes are checked first (``ValueError`` naming the first mismatched tensor); with ``strict``
    missing or unexpected keys raise ``ValueError`` listing them. Returns the missing/unexpected keys.

    >>> net = nn.Linear(2, 3)
    >>> load_state(net, {"model": nn.Linear(2, 3).state_dict()})
    {'missing': [], 'unexpected': []}
    """
    sd = extract_state_dict(obj, source=source)
    own = model.state_dict()
    bad_shape = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if bad_shape:
        k = bad_shape[0]
        raise ValueError(
            f"weights {source} do not fit the model: {k!r} has shape {tuple(sd[k].shape)}, "
            f"the model expects {tuple(own[k].shape)} ({len(bad_shape)} mismatched tensors)"
        )
    result = model.load_state_dict(sd, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if strict and (report["missing"] or report["unexpected"]):
        raise ValueError(
            f"weights {source} do not match the model: missing keys {report['missing'][:8]}"
            f"{' ...' if len(report['missing']) > 8 else ''}, unexpected keys {report['unexpected'][:8]}"
            f"{' ...' if len(report['unexpected']) > 8 else ''}"
        )
    return report


def export_safetensors(
    model_or_state: nn.Module | dict[str, torch.Tensor],
    path: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write the model's weights as a ``.safetensors`` file (atomically).

    ``metadata`` (JSON-serialisable: e.g. ``{"config": {model, model_kwargs, retrofit, data,
    data_kwargs, ...}, "data_info": {num_classes, in_chans, image_size, mean, std, class_names}}``)
    is stored in the file's header under ``"visattn"``; :func:`read_metadata` returns it, and
    ``visattn.train.load_run`` rebuilds the model and its data transform from it.
    """
    import json

    from safetensors.torch import save_file

    sd = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        header = None if metadata is None else {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
        save_file(sd, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The visattn metadata of a ``.safetensors`` file (``{}`` when it has none; see :func:`export_safetensors`).

    ``ValueError`` naming the path when the file is not a safetensors file or its metadata is not JSON.
    """
    import json

    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:
        raise ValueError(f"could not read {str(p)!r} as a safetensors file: {e}") from e
    raw = header.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"the {METADATA_KEY!r} metadata of {str(p)!r} is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(
            f"the {METADATA_KEY!r} metadata of {str(p)!r} must be a mapping, got {type(meta).__name__}"
        )
    return meta


def capture_rng() -> dict[str, Any]:
    """Snapshot of the torch (CPU and CUDA), numpy and Python RNGs, in weights-only-safe types."""
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore RNGs from ``capture_rng``'s snapshot.

    The snapshot may have been loaded with ``map_location`` onto a GPU; RNG states must be CPU byte
    tensors, so they are moved back first. CUDA states are restored for the devices present (a run
    saved with 8 visible GPUs resumes on fewer).
    """
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    py: Any = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), i)
