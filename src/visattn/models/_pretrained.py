"""Trained weights: ``create_model(name, pretrained=True | "tag" | path | url)``.

Each set of weights is a ``.safetensors`` file with a *card* beside it (same stem, ``.json``): the model
name and builder kwargs, the dataset and its split, the exact training command, the commit, the seed,
validation and test accuracy, the preprocessing, the file's sha256 and the data's licence caveat.

Sources of ``pretrained``:

* ``True``: the default tag shipped with the package for this model (``visattn/weights/NAME.TAG.*``);
* ``"TAG"``: that shipped tag (``list_pretrained()`` lists ``NAME.TAG``);
* a local path to a ``.safetensors`` file (its card is the ``.json`` beside it) or to a card;
* an ``http(s)://`` URL of a ``.safetensors`` file: it and its card (same URL, ``.json``) are downloaded
  into ``cache_dir()`` (``$VISATTN_CACHE`` or ``~/.cache/visattn/weights``) only when asked, and read
  from there afterwards (offline).

Checks, each a ``ValueError`` that names what was expected and what was found: the file's sha256 against
the card; the card's model against ``name``; kwargs given to ``create_model`` against the card's (a
different value would change the network); the state dict's keys and shapes against the model's.
fp16 files are cast to the model's dtype on loading. A card with ``"retrofit"`` (and
``"retrofit_kwargs"``) holds the weights of the model with that attention inserted by
``visattn.retrofit`` (as trained); it is inserted before the weights are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "WEIGHTS_DIR",
    "cache_dir",
    "list_pretrained",
    "load_card",
    "resolve_pretrained",
    "load_pretrained",
]

#: The weights shipped as package data: ``NAME.TAG.safetensors`` + ``NAME.TAG.json``.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"

_CARD_KEYS = ("model", "tag", "model_kwargs", "file", "sha256", "dataset", "command", "licence")


def cache_dir() -> Path:
    """Where downloaded weights go: ``$VISATTN_CACHE`` or ``~/.cache/visattn/weights``."""
    env = os.environ.get("VISATTN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "visattn" / "weights"


def list_pretrained(name: str | None = None, *, default_only: bool = False) -> list[str]:
    """``NAME.TAG`` of every shipped set of weights (of model ``name`` only, when given; only those
    whose card says ``"default": true`` with ``default_only``), sorted.

    >>> "mnist_cnn.mnist" in list_pretrained()
    True
    """
    out = sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))
    out = [s for s in out if name is None or s.split(".", 1)[0] == name]
    if default_only:
        out = [s for s in out if load_card(WEIGHTS_DIR / f"{s}.json").get("default")]
    return out


def load_card(path: str | Path) -> dict[str, Any]:
    """Read a weights card (JSON) and check it has the required fields."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"pretrained: no weights card at {str(path)!r} (expected a .json beside the weights)"
        )
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"pretrained: the card {str(path)!r} is not valid JSON: {e}") from None
    missing = [k for k in _CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise ValueError(f"pretrained: the card {str(path)!r} lacks the fields {missing}")
    return card


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:  # noqa: S310 (http(s) only, checked)
        while block := r.read(1 << 20):
            f.write(block)
    tmp.replace(dest)


def _from_url(url: str) -> tuple[Path, Path]:
    if not url.endswith(".safetensors"):
        raise ValueError(f"pretrained: a URL must name a .safetensors file, got {url!r}")
    stem = url.rsplit("/", 1)[-1][: -len(".safetensors")]
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    folder = cache_dir() / f"{stem}-{key}"
    weights, card = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    if not card.is_file():
        _download(url[: -len(".safetensors")] + ".json", card)
    if not weights.is_file():
        _download(url, weights)
    return weights, card


def resolve_pretrained(name: str, pretrained: bool | str | Path) -> tuple[dict[str, Any], Path]:
    """The card and the weights file that ``pretrained`` names for model ``name`` (see the module doc)."""
    if pretrained is True:
        tags = list_pretrained(name)
        if not tags:
            raise ValueError(
                f"pretrained=True: no shipped weights for model {name!r}; shipped: {list_pretrained()}"
            )
        defaults = [t for t in tags if load_card(WEIGHTS_DIR / f"{t}.json").get("default")]
        stem = (defaults or tags)[0]
        card_path, weights = WEIGHTS_DIR / f"{stem}.json", None
    elif isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        s = str(pretrained)
        if s.startswith(("http://", "https://")):
            weights, card_path = _from_url(s)
        elif s.endswith((".safetensors", ".json")) or os.sep in s or "/" in s:
            p = Path(s)
            if not p.exists():
                raise ValueError(f"pretrained: no such file {s!r}")
            card_path = p if p.suffix == ".json" else p.with_suffix(".json")
            weights = p if p.suffix == ".safetensors" else None
        else:
            card_path, weights = WEIGHTS_DIR / f"{name}.{s}.json", None
            if not card_path.is_file():
                tags = [t.split(".", 1)[1] for t in list_pretrained(name)]
                raise ValueError(f"pretrained: model {name!r} has no weights tagged {s!r}; its tags: {tags}")
    else:
        raise TypeError(
            f"pretrained must be True, a tag, a path or a URL, got {type(pretrained).__name__} {pretrained!r}"
        )
    card = load_card(card_path)
    if weights is None:
        weights = card_path.parent / str(card["file"])
    if card["model"] != name:
        raise ValueError(
            f"pretrained: the card {str(card_path)!r} is for model {card['model']!r}, not {name!r}"
        )
    if not weights.is_file():
        raise ValueError(f"pretrained: the weights file {str(weights)!r} named by the card does not exist")
    got = sha256(weights)
    if got != card["sha256"]:
        raise ValueError(
            f"pretrained: sha256 of {str(weights)!r} is {got}, but its card says {card['sha256']}"
            " (a corrupted or substituted file)"
        )
    return card, weights


def merged_kwargs(card: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The card's builder kwargs updated with ``kwargs``; a value that differs from the card's is an error."""
    saved = dict(card["model_kwargs"])
    clash = {k: (v, saved[k]) for k, v in kwargs.items() if k in saved and saved[k] != v}
    if clash:
        desc = ", ".join(f"{k}={v!r} (weights: {s!r})" for k, (v, s) in clash.items())
        raise ValueError(f"pretrained: {desc} does not match the network the weights were trained as")
    return {**saved, **kwargs}


def _loaded_elsewhere(model: nn.Module, card: dict[str, Any]) -> str:
    """The state-dict prefix a card leaves out of its file (``card["keys_from"]``: ``{"prefix": "base.",
    "weights": "NAME.TAG"}``, e.g. a dasNet whose base is other shipped weights), checked to be loaded already:
    the submodule at that prefix must carry those weights' card. ``""`` when the card has none."""
    spec = card.get("keys_from")
    if not spec:
        return ""
    prefix, ident = spec["prefix"], spec["weights"]
    sub = model.get_submodule(prefix.rstrip("."))
    got = getattr(sub, "pretrained_card", None) or {}
    if f"{got.get('model')}.{got.get('tag')}" != ident or got.get("sha256") != load_card(
        WEIGHTS_DIR / f"{ident}.json"
    ).get("sha256"):
        raise ValueError(
            f"pretrained: the card takes {prefix}* from the shipped weights {ident!r}, but the model's "
            f"{prefix.rstrip('.')!r} was not built from them (build it with base={ident!r})"
        )
    return prefix


def load_pretrained(model: nn.Module, card: dict[str, Any], weights: Path) -> nn.Module:
    """Load ``weights`` (safetensors) into ``model`` strictly, cast to its dtypes; attach ``model.pretrained_card``.

    Keys under ``card["keys_from"]["prefix"]`` may be absent from the file when that submodule was built
    from the shipped weights the card names (checked by sha256): a dasNet's file holds only its policy.
    """
    from safetensors.torch import load_file

    sd = load_file(str(weights))
    own = model.state_dict()
    elsewhere = _loaded_elsewhere(model, card)
    missing = sorted(k for k in set(own) - set(sd) if not (elsewhere and k.startswith(elsewhere)))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"pretrained: {str(weights)!r} does not match model {card['model']!r}: missing keys"
            f" {missing[:5]}, unexpected keys {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    # own | ...: the keys loaded elsewhere keep their values (the only keys the file may lack, checked above)
    model.load_state_dict(own | {k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    model.pretrained_card = card  # type: ignore[assignment]
    return model


def build_pretrained(builder: Any, name: str, pretrained: Any, kwargs: dict[str, Any]) -> nn.Module:
    """``builder(**kwargs)`` (the card's kwargs merged in) with the weights ``pretrained`` names, in eval mode."""
    card, weights = resolve_pretrained(name, pretrained)
    model = builder(**merged_kwargs(card, kwargs))
    if card.get("retrofit"):  # weights of a network with attention inserted (e.g. SE into Lite0)
        from visattn.retrofit import retrofit

        retrofit(model, attention=card["retrofit"], **card.get("retrofit_kwargs", {}))
    load_pretrained(model, card, weights)
    return model.eval()
