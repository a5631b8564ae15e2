"""The ``visattn`` command: ``list``, ``train``, ``eval``, ``export``, ``demo``, ``report``.

A thin layer over typed configs (``visattn.train.TrainConfig``): every option maps to a config
field, ``--config FILE.yaml`` loads a file and ``--set key=value`` overrides any field
(``visattn train --help-config`` lists them all). Bad input (an unknown model, dataset or config
key, a misspelt option, a value of the wrong type, a YAML syntax error, a missing path, an
``--out`` folder that holds another run) exits with status 2 and one line naming the argument and
what it got, before any work starts. Library code logs through ``logging`` (logger ``visattn``);
the command sends it to stderr, ``--quiet`` keeps warnings only, ``--verbose`` adds debug lines.

Several GPUs or machines: ``torchrun --nproc-per-node 4 -m visattn train ...`` (same options).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

__all__ = ["main", "build_parser"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where there is a default worth showing (not ``None`` or a bare flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpConfig(argparse.Action):
    """``--help-config``: print every TrainConfig key with its type, default and meaning, then exit."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from visattn.train.config import config_help

        print(config_help())
        parser.exit(0)


def _verbosity() -> Any:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only; no progress bars"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="also log debug messages")
    return common


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """Route the ``visattn`` loggers to stderr (one handler, replaced on every call)."""
    logger = logging.getLogger("visattn")
    for h in [h for h in logger.handlers if getattr(h, "_visattn_cli", False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._visattn_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _kv(items: list[str] | None, option: str) -> dict[str, Any]:
    from visattn.train.config import parse_yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{option} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_yaml(v, f"{option} {item!r}, value {v!r}") if v.strip() else None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``visattn`` command."""
    from visattn import __version__

    p = _Parser(
        prog="visattn",
        description="Attention mechanisms for image classification.",
        epilog="Multi-GPU / multi-machine: torchrun --nproc-per-node N -m visattn train ...",
    )
    p.add_argument("--version", action="version", version=f"visattn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, help="what to do")
    common: Any = [_verbosity()]

    ls = sub.add_parser(
        "list",
        parents=common,
        help="list registered models (input, channels, parameters), attention types, sensors, datasets and shipped weights",
        description="List what is registered. `visattn list 'se_*'` filters every group by a glob; "
        "`visattn list models 'resnet*'` one group.",
    )
    ls.add_argument(
        "what",
        nargs="?",
        default="all",
        help="models, attention, sensors, datasets, weights (shipped) or all; anything else is taken as the PATTERN",
    )
    ls.add_argument("pattern", nargs="?", help="glob on the names, e.g. 'se_*'")

    tr = sub.add_parser(
        "train",
        parents=common,
        help="train a model (single process or under torchrun)",
        description="Train a model. Options map to TrainConfig fields; "
        "--set key=value overrides any field (e.g. --set lr=0.05); --help-config lists them.",
    )
    tr.add_argument(
        "--help-config", action=_HelpConfig, help="list every config key, its type and default; exit"
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
    tr.add_argument("--epochs", type=int, help="training epochs (config default 10)")
    tr.add_argument(
        "--batch-size", type=int, help="global batch size (split over torchrun processes; default 128)"
    )
    tr.add_argument("--lr", type=float, help="base learning rate (config default 0.1)")
    tr.add_argument("--seed", type=int, help="seed of weights, validation split and data order (default 0)")
    tr.add_argument("--out", help="run folder (checkpoints, config.yaml, metrics)")
    tr.add_argument("--resume", action="store_true", default=None, help="continue from OUT/last.pt")
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --out to name a folder that already holds a run (its checkpoints and logs are deleted first)",
    )
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

    ev = sub.add_parser(
        "eval",
        parents=common,
        help="evaluate weights on a dataset's test (or validation) split",
        description="Evaluate a run folder, a checkpoint or an exported .safetensors file. The model and "
        "data are rebuilt from the config saved with the weights (visattn.train.load_run); options override it.",
    )
    ev.add_argument("--model", help="model name (default: the one in the checkpoint's config)")
    ev.add_argument(
        "--weights", help="run folder, checkpoint or .safetensors weights file (or use --pretrained)"
    )
    ev.add_argument(
        "--pretrained",
        nargs="?",
        const=True,
        metavar="TAG",
        help="the package's weights for --model (or TAG/path/URL)",
    )
    ev.add_argument("--data", help="dataset name (default: the checkpoint's)")
    ev.add_argument("--data-dir", help="dataset path (default: the checkpoint's, for the same dataset)")
    ev.add_argument("--split", choices=["test", "val"], default="test", help="which split to score")
    ev.add_argument("--retrofit", help="attention type inserted before the weights were trained")
    ev.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="option of the model builder")
    ev.add_argument(
        "--data-arg", action="append", metavar="KEY=VALUE", help="option of the dataset (e.g. size=32)"
    )
    ev.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a field of the run's config (e.g. data_kwargs.size=32)",
    )
    ev.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")

    ex = sub.add_parser(
        "export",
        parents=common,
        help="export a model to ONNX / torch.export, or weights to .safetensors",
    )
    ex.add_argument("--weights", help="checkpoint or weights file (loaded weights-only)")
    ex.add_argument("--out", required=True, help="output path (.safetensors, .onnx or .pt2)")
    ex.add_argument(
        "--format",
        choices=["safetensors", "onnx", "torch_export"],
        default="safetensors",
        help="safetensors: the weights with the run's metadata; onnx / torch_export: the model",
    )
    ex.add_argument("--model", help="model name (onnx/torch_export; default: the checkpoint's)")
    ex.add_argument(
        "--pretrained", nargs="?", const=True, metavar="TAG", help="the package's weights for --model"
    )
    ex.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="option of the model builder")
    ex.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="default: the model's")
    ex.add_argument("--static-batch", action="store_true", help="fix the batch size (default: dynamic)")

    de = sub.add_parser(
        "demo", parents=common, help="the main job: train a baseline and each attention model, compare"
    )
    de.add_argument("--out", default="runs/demo", help="folder of the runs, results.md and report.html")
    de.add_argument("--data-dir", help="Fashion-MNIST folder (default: Debian's package folder)")
    de.add_argument(
        "--budget",
        choices=["tiny", "short"],
        default="short",
        help="tiny: a smoke test (under 3 minutes on 2 idle CPU cores); short: about 6 minutes there",
    )

    rp = sub.add_parser("report", parents=common, help="one self-contained HTML page comparing run folders")
    rp.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="run folders written by `visattn train` or `visattn pipeline two-level`",
    )
    rp.add_argument("--out", default="report.html", help="the HTML file to write")
    rp.add_argument("--data-dir", help="dataset folder overriding the runs' own data_dir")
    rp.add_argument("--images", type=int, default=6, help="test images shown per run")
    rp.add_argument(
        "--leaderboard",
        action="append",
        default=[],
        metavar="JSON",
        help="a benchmark's raw JSON (benchmarks/bench_fine_grained.py): leaderboard table and plot (repeatable)",
    )

    from visattn.pipelines.cli import add_pipeline_parser

    add_pipeline_parser(sub)  # `visattn pipeline two-level ...`; sets args.handler
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
    if args.quiet:
        data["progress"] = False
    data = apply_overrides(data, args.overrides or [])
    cfg = config_from_dict(data)
    _check_names(cfg.model, cfg.data, cfg.retrofit)
    return cfg


def _check_names(model: str | None, data: str | None, retrofit: str | None) -> None:
    import visattn
    from visattn.data import list_datasets
    from visattn.registry import suggest

    for option, kind, value, names in (
        ("--model", "model", model, visattn.list_models()),
        ("--data", "dataset", data, list_datasets()),
        ("--retrofit", "attention", retrofit, visattn.list_attention()),
    ):
        if value is not None and value not in names:
            raise ValueError(
                f"{option}: unknown {kind} {value!r}{suggest(value, names)}; valid names: {names}"
            )


RUN_FILES = ("config.yaml", "last.pt", "best.pt", "summary.json", "metrics.jsonl")


def _check_out_dir(out: str, model: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder holding another run unless ``--resume`` or ``--overwrite``;
    refuse ``--resume`` of a run of another model."""
    import os
    from pathlib import Path

    import yaml

    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        return  # torchrun restarted the workers: the files are this run's own (every rank checks
        # before the process group forms, so no rank can have written before another checked)
    root = Path(out)
    found = [f for f in RUN_FILES if (root / f).is_file()]
    if not found:
        return
    if overwrite and not resume:  # no stale best.pt or metrics of the old run survive beside the new one
        for f in (*RUN_FILES, "metrics.csv"):
            (root / f).unlink(missing_ok=True)
        return
    saved: dict[str, Any] = {}
    if (root / "config.yaml").is_file():
        try:
            saved = yaml.safe_load((root / "config.yaml").read_text()) or {}
        except yaml.YAMLError:
            saved = {}
    if not resume:
        what = f" of model {saved['model']!r}" if isinstance(saved, dict) and saved.get("model") else ""
        raise ValueError(
            f"--out {out!r} already holds a run{what} ({', '.join(found)}); pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    if isinstance(saved, dict) and saved.get("model") not in (None, model):
        raise ValueError(
            f"--resume: {out!r} holds a run of model {saved['model']!r}, not --model {model!r}; "
            "pass another --out (or --overwrite to start over there)"
        )


def _model_rows(names: list[str]) -> list[tuple[str, str, str, str]]:
    """``(name, input, channels, parameters)`` of each model, built with its defaults on the meta
    device (no memory, no time)."""
    import torch

    import visattn

    rows = []
    for name in names:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. ImageNet weights copied onto meta tensors (a no-op)
                model = visattn.create_model(name)
        except (TypeError, ValueError) as e:  # a builder with a required option (dasnet's base)
            import re

            need = re.findall(r"argument: '(\w+)'", str(e))
            rows.append((name, "-", "-", f"(needs {need[0]}=...)" if need else "(needs options)"))
            continue
        except (RuntimeError, NotImplementedError):  # a builder that reads tensor values (not on meta)
            rows.append((name, "?", "?", "?"))
            continue
        except ImportError:  # a builder over an optional package that is not installed
            rows.append((name, "-", "-", "(needs an optional package)"))
            continue
        spec = getattr(model, "input_spec", None)
        if spec is None:
            size, chans = "?", "?"
        elif spec.size is not None:
            size, chans = f"{spec.size[0]}x{spec.size[1]}", str(spec.in_chans)
        else:
            size, chans = f">={spec.min_size[0]}x{spec.min_size[1]}", str(spec.in_chans)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, size, chans, f"{params / 1e6:.2f}M"))
    return rows


def _weights_rows(pattern: str | None) -> list[tuple[str, str]]:
    """``(NAME.TAG, summary)`` of the shipped weights whose id matches the glob ``pattern``."""
    from fnmatch import fnmatchcase

    from visattn.models._pretrained import WEIGHTS_DIR, list_pretrained, load_card
    from visattn.train.pose import scorer

    rows = []
    for ident in list_pretrained():
        if pattern is not None and not fnmatchcase(ident, pattern):
            continue
        card = load_card(WEIGHTS_DIR / f"{ident}.json")
        task = scorer(card.get("task", "classification"))
        notes = [card["dataset"], f"test {task.label} {card[f'test_{task.metric}']:.2f} %", card["dtype"]]
        if card.get("default"):
            notes.append("default")
        if "RESEARCH USE ONLY" in card.get("licence", ""):
            notes.append("research use only")
        rows.append((ident, ", ".join(notes)))
    return rows


def _cmd_list(args: argparse.Namespace) -> int:
    import visattn
    from visattn.attention import list_sensors
    from visattn.data import list_datasets

    groups = ("models", "attention", "sensors", "datasets", "weights")
    what, pattern = args.what, args.pattern
    if what not in (*groups, "all"):
        if pattern is not None:
            raise ValueError(
                f"list: expected models, attention, sensors, datasets, weights or all before {pattern!r}, "
                f"got {what!r}"
            )
        what, pattern = "all", what
    found = 0
    if what in ("models", "all"):
        rows = _model_rows(visattn.list_models(pattern))
        found += len(rows)
        if rows:
            print("models (input size HxW, channels, parameters with default options):")
            w = max(len(r[0]) for r in rows)
            for r in rows:
                print(f"  {r[0]:<{w}}  {r[1]:>9}  {r[2]:>3}  {r[3]:>8}")
    other = (
        ("attention", visattn.list_attention(pattern)),  # drop-in modules: attn_layer, --retrofit
        ("sensors", list_sensors(pattern)),  # modules with their own forward (RAM's glimpse sensor)
        ("datasets", list_datasets(pattern)),
    )
    for name, items in other:
        if what in (name, "all"):
            found += len(items)
            if items:
                print(f"{name}: {', '.join(items)}")
    if what in ("weights", "all"):
        weights = _weights_rows(pattern)
        found += len(weights)
        if weights:
            print("weights (create_model(NAME, pretrained=TAG); test score from the card):")
            w = max(len(r[0]) for r in weights)
            for ident, notes in weights:
                print(f"  {ident:<{w}}  {notes}")
    if not found:
        raise ValueError(f"nothing matches {pattern!r}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from visattn.callbacks import default_callbacks
    from visattn.train import fit
    from visattn.train.config import config_to_dict

    cfg = _train_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    _check_out_dir(cfg.out, cfg.model, resume=cfg.resume, overwrite=args.overwrite)
    summary = fit(cfg, callbacks=default_callbacks(cfg))
    keys = ("model", "data", "best_val_top1", "test_top1", "test_top5", "params", "train_time_s", "out")
    if cfg.task == "pose":
        keys = ("model", "data", "best_val_pck", "test_pck", "test_pck_all", "params", "train_time_s", "out")
    print(json.dumps({k: summary.get(k) for k in keys}))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.pretrained is not None:
        return _cmd_eval_pretrained(args)
    if args.weights is None:
        raise ValueError("--weights or --pretrained is needed")
    import torch

    from visattn.train import apply_overrides, evaluate, load_run

    flat = {"model": args.model, "data": args.data, "data_dir": args.data_dir, "retrofit": args.retrofit}
    over: dict[str, Any] = {k: v for k, v in flat.items() if v is not None}
    if args.model_arg:
        over["model_kwargs"] = _kv(args.model_arg, "--model-arg")
    if args.data_arg:
        over["data_kwargs"] = _kv(args.data_arg, "--data-arg")
    over = apply_overrides(over, args.overrides or [])
    _check_names(over.get("model"), over.get("data"), over.get("retrofit"))
    run = load_run(args.weights, overrides=over)
    loader = run.loader(args.split, batch_size=args.batch_size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = run.model.to(device)
    res = evaluate(net, loader, device, desc=None if args.quiet else f"eval {args.split}")
    out = {"model": run.config.model, "data": run.config.data, "split": args.split, **res}
    base = getattr(net, "base", None)
    if isinstance(base, torch.nn.Module):  # a feedback model (dasNet): its frozen base on the same images
        base_res = evaluate(base, loader, device)
        out.update({f"base_{k}": v for k, v in base_res.items() if k != "n"})
        out["top1_minus_base"] = res["top1"] - base_res["top1"]
    print(json.dumps(out))
    return 0


def _cmd_eval_pretrained(args: argparse.Namespace) -> int:
    """``visattn eval --model NAME --pretrained [TAG]``: the card's dataset, split and preprocessing."""
    import torch

    import visattn
    from visattn.data import load_dataset
    from visattn.train.pose import scorer

    if args.model is None:
        raise ValueError("--pretrained needs --model")
    _check_names(args.model, args.data, None)
    net = visattn.create_model(args.model, pretrained=args.pretrained, **_kv(args.model_arg, "--model-arg"))
    card: dict[str, Any] = getattr(net, "pretrained_card")  # noqa: B009  (set by create_model)
    data = args.data or card["dataset"]
    seed = int(card.get("seed", 0))
    splits = load_dataset(data, data_dir=args.data_dir, seed=seed, **dict(card.get("data_kwargs") or {}))
    task = scorer(card.get("task", "classification"))  # pose cards: PCK@0.2 on their crops
    loaders = task.make_loaders(
        splits,
        batch_size=args.batch_size,
        val_fraction=float(card.get("val_fraction", 0.1)),
        seed=seed,
        augment="none",
        eval_batch_size=args.batch_size,
    )
    loader = loaders.test if args.split == "test" else loaders.val
    if loader is None:
        raise ValueError(f"--split {args.split}: no {args.split} split")
    res = task.evaluate(net, loader, torch.device("cpu"))
    out = {"model": args.model, "data": data, "split": args.split, **res}
    print(json.dumps(out | {f"card_{task.metric}": card.get(f"{args.split}_{task.metric}")}))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.format != "safetensors":
        from visattn.export import export_from_args

        print(json.dumps(export_from_args(args, _kv(args.model_arg, "--model-arg"))))
        return 0
    if args.weights is None:
        raise ValueError("--weights is needed for --format safetensors")
    from visattn.checkpoint import export_safetensors, extract_state_dict, safe_load
    from visattn.train.run import REBUILD_KEYS

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    ck = safe_load(args.weights)
    sd = extract_state_dict(ck, source=repr(args.weights))
    meta: dict[str, Any] = {}
    if isinstance(ck, dict) and isinstance(
        ck.get("config"), dict
    ):  # a visattn checkpoint: keep how to rebuild it
        meta["config"] = {k: ck["config"][k] for k in REBUILD_KEYS if k in ck["config"]}
        if isinstance(ck.get("data_info"), dict):
            meta["data_info"] = ck["data_info"]
    export_safetensors(sd, out, metadata=meta or None)
    print(
        json.dumps({"weights": args.weights, "out": str(out), "tensors": len(sd), "metadata": sorted(meta)})
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from visattn.demo import run_demo

    run_demo(out=args.out, data_dir=args.data_dir, budget=args.budget)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from visattn.report import write_report

    path = write_report(
        args.run_dirs, args.out, data_dir=args.data_dir, images=args.images, leaderboards=args.leaderboard
    )
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``visattn`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(
        getattr(args, "quiet", False), getattr(args, "verbose", False)
    )  # subcommands without -q/-v
    handlers = {
        "list": _cmd_list,
        "train": _cmd_train,
        "eval": _cmd_eval,
        "export": _cmd_export,
        "demo": _cmd_demo,
        "report": _cmd_report,
    }
    try:
        return (getattr(args, "handler", None) or handlers[args.command])(args)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"visattn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
