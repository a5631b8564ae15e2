"""The ``visattn`` command: ``list``, ``train``, ``eval``, ``export``, ``demo``, ``report``.

A thin layer over typed configs (``visattn.train.TrainConfig``): every option maps to a config
field, ``--config FILE.yaml`` loads a file and ``--set key=value`` overrides any field. Bad input
(an unknown model, dataset or config key, a value of the wrong type, a missing path) exits with
status 2 and a message naming the argument and what it got, before any work starts.

Several GPUs or machines: ``torchrun --nproc-per-node 4 -m visattn train ...`` (same options).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _kv(items: list[str] | None, option: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{option} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v.strip() else None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``visattn`` command."""
    p = _Parser(
        prog="visattn",
        description="Attention mechanisms for image classification.",
        epilog="Multi-GPU / multi-machine: torchrun --nproc-per-node N -m visattn train ...",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="list registered models, attention types and datasets")
    ls.add_argument("what", nargs="?", choices=["models", "attention", "datasets", "all"], default="all")

    tr = sub.add_parser(
        "train",
        help="train a model (single process or under torchrun)",
        description="Train a model. Options map to TrainConfig fields; "
        "--set key=value overrides any field (e.g. --set lr=0.05).",
    )
    tr.add_argument("--config", help="YAML file of TrainConfig fields")
    tr.add_argument(
        "--task", choices=["classification", "pose"], help="what the model predicts (default: classification)"
    )
    tr.add_argument("--model", help="registered model name (see `visattn list models`)")
    tr.add_argument("--data", help="registered dataset name (see `visattn list datasets`)")
    tr.add_argument("--data-dir", help="local path of the dataset (folder or .npz)")
    tr.add_argument("--download", action="store_true", default=None, help="allow torchvision to download")
    tr.add_argument("--weights", help="initial weights (.pt loaded weights_only, or .safetensors)")
    tr.add_argument("--retrofit", help="insert this attention type into the model (identity init)")
    tr.add_argument("--epochs", type=int)
    tr.add_argument("--batch-size", type=int, help="global batch size (split over torchrun processes)")
    tr.add_argument("--lr", type=float)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--out", help="run folder (checkpoints, config.yaml, metrics)")
    tr.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt")
    tr.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="option of the model builder")
    tr.add_argument("--base", help="trained CNN weights for feedback models (sets model_kwargs.base)")
    tr.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        dest="overrides",
        help="override any config field (repeatable)",
    )
    tr.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    ev = sub.add_parser("eval", help="evaluate weights on a dataset's test (or validation) split")
    ev.add_argument("--model", help="model name (default: the one in the checkpoint's config)")
    ev.add_argument("--weights", required=True, help="checkpoint or weights file")
    ev.add_argument("--data", help="dataset name (default: the checkpoint's)")
    ev.add_argument("--data-dir")
    ev.add_argument("--split", choices=["test", "val"], default="test")
    ev.add_argument("--retrofit", help="attention type inserted before the weights were trained")
    ev.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    ev.add_argument("--batch-size", type=int, default=256)

    ex = sub.add_parser("export", help="write a checkpoint's model weights as a .safetensors file")
    ex.add_argument("--weights", required=True, help="checkpoint or weights file (loaded weights-only)")
    ex.add_argument("--out", required=True, help="output path, ending in .safetensors")

    de = sub.add_parser("demo", help="the main job: train a baseline and each attention model, compare")
    de.add_argument("--out", default="runs/demo")
    de.add_argument("--data-dir", help="Fashion-MNIST folder (default: Debian's package folder)")
    de.add_argument(
        "--budget",
        choices=["tiny", "short"],
        default="short",
        help="tiny: seconds (smoke test); short: about 6 minutes on 2 idle CPU cores",
    )

    rp = sub.add_parser("report", help="one self-contained HTML page comparing run folders")
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders written by `visattn train`")
    rp.add_argument("--out", default="report.html", help="the HTML file to write")
    rp.add_argument("--data-dir", help="dataset folder overriding the runs' own data_dir")
    rp.add_argument("--images", type=int, default=6, help="test images shown per run")
    return p


def _train_config(args: argparse.Namespace):
    from visattn.train import apply_overrides, config_from_dict, load_config

    data: dict[str, Any] = load_config(args.config) if args.config else {}
    flat = {
        "task": args.task,
        "model": args.model,
        "data": args.data,
        "data_dir": args.data_dir,
        "download": args.download,
        "weights": args.weights,
        "retrofit": args.retrofit,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "out": args.out,
        "resume": args.resume,
    }
    data.update({k: v for k, v in flat.items() if v is not None})
    model_kwargs = dict(data.get("model_kwargs") or {})
    model_kwargs.update(_kv(args.model_arg, "--model-arg"))
    if args.base:
        model_kwargs["base"] = args.base
    if model_kwargs:
        data["model_kwargs"] = model_kwargs
    data = apply_overrides(data, args.overrides or [])
    cfg = config_from_dict(data)
    _check_names(cfg.model, cfg.data, cfg.retrofit)
    return cfg


def _check_names(model: str | None, data: str | None, retrofit: str | None) -> None:
    import visattn
    from visattn.data import list_datasets

    if model is not None and model not in visattn.list_models():
        raise ValueError(f"--model: unknown model {model!r}; valid names: {visattn.list_models()}")
    if data is not None and data not in list_datasets():
        raise ValueError(f"--data: unknown dataset {data!r}; valid names: {list_datasets()}")
    if retrofit is not None and retrofit not in visattn.list_attention():
        raise ValueError(
            f"--retrofit: unknown attention {retrofit!r}; valid names: {visattn.list_attention()}"
        )


def _cmd_list(args: argparse.Namespace) -> int:
    import visattn
    from visattn.data import list_datasets

    groups = {
        "models": visattn.list_models(),
        "attention": visattn.list_attention(),
        "datasets": list_datasets(),
    }
    for name, items in groups.items():
        if args.what in (name, "all"):
            print(f"{name}: {', '.join(items)}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from visattn.train import fit
    from visattn.train.config import config_to_dict

    cfg = _train_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    summary = fit(cfg)
    keys = ("model", "data", "best_val_top1", "test_top1", "test_top5", "params", "train_time_s", "out")
    if cfg.task == "pose":
        keys = ("model", "data", "best_val_pck", "test_pck", "test_pck_all", "params", "train_time_s", "out")
    print(json.dumps({k: summary.get(k) for k in keys}))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from visattn.data import load_dataset, make_loaders
    from visattn.train import TrainConfig, build_model, evaluate, safe_load
    from visattn.train.engine import check_model_fits

    ck = safe_load(args.weights)
    saved = ck.get("config", {}) if isinstance(ck, dict) else {}
    model = args.model or saved.get("model")
    data = args.data or saved.get("data")
    if model is None or data is None:
        raise ValueError("--model and --data are needed: the weights file holds no visattn config")
    retrofit = args.retrofit if args.retrofit is not None else saved.get("retrofit")
    _check_names(model, data, retrofit)
    model_kwargs = dict(saved.get("model_kwargs") or {}) if model == saved.get("model") else {}
    model_kwargs.update(_kv(args.model_arg, "--model-arg"))
    data_dir = args.data_dir or (saved.get("data_dir") if data == saved.get("data") else None)
    cfg = TrainConfig(
        model=model,
        data=data,
        data_dir=data_dir,
        model_kwargs=model_kwargs,
        retrofit=retrofit,
        retrofit_kwargs=dict(saved.get("retrofit_kwargs") or {}) if retrofit else {},
        weights=args.weights,
        val_fraction=float(saved.get("val_fraction", 0.1)),
        seed=int(saved.get("seed", 0)),
        data_kwargs=dict(saved.get("data_kwargs") or {}),
    )
    splits = load_dataset(cfg.data, data_dir=cfg.data_dir, seed=cfg.seed, **cfg.data_kwargs)
    # retrofit first, then load: a retrofitted network's weights hold the inserted modules.
    weights: str = args.weights
    cfg.weights = None
    net = build_model(cfg, num_classes=splits.num_classes, in_chans=splits.in_chans)
    from visattn.train import load_weights

    load_weights(net, weights, strict=True)
    check_model_fits(net, cfg.model, splits.in_chans, splits.image_size)
    loaders = make_loaders(
        splits,
        batch_size=args.batch_size,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        augment="none",
        eval_batch_size=args.batch_size,
    )
    loader = loaders.test if args.split == "test" else loaders.val
    if loader is None:
        raise ValueError(f"--split {args.split}: this run has no {args.split} split")
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    res = evaluate(net, loader, device)
    out = {"model": cfg.model, "data": cfg.data, "split": args.split, **res}
    base = getattr(net, "base", None)
    if isinstance(base, torch.nn.Module):  # a feedback model (dasNet): its frozen base on the same images
        base_res = evaluate(base, loader, device)
        out.update({f"base_{k}": v for k, v in base_res.items() if k != "n"})
        out["top1_minus_base"] = res["top1"] - base_res["top1"]
    print(json.dumps(out))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from visattn.train import export_safetensors, safe_load
    from visattn.train.checkpoint import extract_state_dict

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    sd = extract_state_dict(safe_load(args.weights), source=repr(args.weights))
    export_safetensors(sd, out)
    print(json.dumps({"weights": args.weights, "out": str(out), "tensors": len(sd)}))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from visattn.demo import run_demo

    run_demo(out=args.out, data_dir=args.data_dir, budget=args.budget)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from visattn.viz.report import write_report

    path = write_report(args.run_dirs, args.out, data_dir=args.data_dir, images=args.images)
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``visattn`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "list": _cmd_list,
        "train": _cmd_train,
        "eval": _cmd_eval,
        "export": _cmd_export,
        "demo": _cmd_demo,
        "report": _cmd_report,
    }
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"visattn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
