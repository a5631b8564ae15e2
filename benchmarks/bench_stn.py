"""CPU-scale slice of Table 1 of Spatial Transformer Networks (Jaderberg et al., NIPS 2015).

Trains models from ``visattn.models.stn`` on a distorted MNIST (``mnist_rts`` by default) through the
library's engine (``visattn.train.Trainer``, the code ``visattn train`` runs) for a fixed budget of
optimiser steps per model: ``--steps`` in periods of ``--eval-every`` steps (the engine's "epochs",
``max_steps_per_epoch``), each period a fresh shuffle of the training set, validation after each
period on ``--val-size`` images carved from the training set (the engine's split, seeded by
``--seed``). The best-on-validation period's weights are scored once on the fixed generated test set.
Adam (``adamw``, weight decay 0) with the engine's warm-up (30 % of the steps) + cosine schedule; two
hooks of this recipe sit on the ``Trainer`` (:class:`STNTrainer`): the localisation nets' smaller
learning rate and, with ``--fresh-train``, new training distortions every period.

Before 2026-12-06 this script had its own loop (Adam + ``OneCycleLR``, one fixed validation split of
seed 1234, fresh distortions per full pass); the figures in docs/results/stn.md measured with it say so.

Example (the 700-step figure of docs/results/stn.md, one model per run):

    nice python benchmarks/bench_stn.py --data-dir ../shared/data/mnist.npz --dataset mnist_rts \\
        --models cnn_mnist --steps 700 --eval-every 350 --val-size 2000 --seed 0 --out cnn_s0.json
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import visattn
from visattn.attention import SpatialTransformer
from visattn.data import load_dataset, make_loaders
from visattn.data.distorted import distort
from visattn.functional import affine_rotation, residual_rotation
from visattn.train import Trainer, load_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import error_rate, train_config, write_result  # noqa: E402

KINDS = {"mnist_rotated": "R", "mnist_rts": "RTS", "mnist_projective": "P", "mnist_elastic": "E"}


def model_options(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """``create_model`` keyword arguments of model ``name`` for ``size x size`` inputs."""
    return {"image_size": size} | ({"transform": args.transform} if name.startswith("st_") else {})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        default=None,
        help="YAML of option defaults (keys: the options' names with '_', e.g. loc_lr_mult), such as"
        " benchmarks/configs/st_cnn_mnist_rts.yaml; options given on the command line override it",
    )
    p.add_argument("--data-dir", default=None, help="MNIST source, e.g. ../shared/data/mnist.npz (required)")
    p.add_argument(
        "--dataset",
        default="mnist_rts",
        choices=list(KINDS),
    )
    p.add_argument("--models", nargs="+", default=["cnn_mnist", "st_cnn_mnist"])
    p.add_argument("--transform", default="affine", help="transform of the st_* models")
    p.add_argument("--steps", type=int, default=900)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--loc-lr-mult", type=float, default=0.1, help="learning-rate factor of the localisation nets"
    )
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--train-size", type=int, default=0, help="use only this many training images (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument(
        "--time-steps", type=int, default=0, help="only time N interleaved training steps per model"
    )
    p.add_argument(
        "--png",
        default=None,
        help="draw the selected st_* model's warps of 8 test images here (with --rotation-checkpoint: of 8"
        " validation images)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="model and inputs in channels_last memory format (faster on CPU, not bit-identical)",
    )
    p.add_argument(
        "--runs",
        default="runs/bench_stn",
        help="the engine's run folders go here (<dataset>_<model>_s<seed>/: best.pt, last.pt, history)",
    )
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their last.pt")
    p.add_argument(
        "--no-test",
        action="store_true",
        help="validation only (recipe search): the test set is not scored; the best-on-validation weights are"
        " reloaded for the rotation metric",
    )
    p.add_argument(
        "--fresh-train",
        action="store_true",
        help="draw new distortions of the training digits every epoch (seed 1e6 + 1000 seed + epoch; the"
        " validation digits are never trained on) instead of one fixed generated training set",
    )
    p.add_argument(
        "--rotation-checkpoint",
        default=None,
        help="only measure the residual rotation of this checkpoint's (best.pt, or safetensors) warps on the"
        " validation split of --val-size / --seed (the engine's split; no test image is used) and stop",
    )
    p.add_argument(
        "--test-checkpoint",
        default=None,
        help="only evaluate this checkpoint (a run's best.pt, or safetensors) of --models' single model on the"
        " test set and stop",
    )
    first, _ = p.parse_known_args(argv)
    if first.config:
        p.set_defaults(**read_config(first.config, p))
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("--data-dir is required (on the command line or as data_dir in --config)")
    return args


def read_config(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Option defaults from the YAML file ``path``; an unknown key is a ``ValueError`` naming the valid ones."""
    from visattn.train.config import parse_yaml

    cfg = parse_yaml(Path(path).read_text(), path) or {}
    if not isinstance(cfg, dict):
        raise ValueError(
            f"config {path!r} must be a mapping of option names to values, got {type(cfg).__name__}"
        )
    valid = sorted(a.dest for a in parser._actions if a.dest not in ("help", "config"))
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        raise ValueError(f"config {path!r}: unknown keys {hints} (key: did you mean); valid keys: {valid}")
    return cfg


class STNTrainer(Trainer):
    """The engine's ``Trainer`` with the two hooks of this recipe.

    - ``loc_lr_mult``: the localisation nets train at ``lr * loc_lr_mult`` (the paper lowers their rate);
      the optimiser is rebuilt with two parameter groups under the engine's own schedule (``make_scheduler``).
    - ``regenerate(epoch)``: with ``--fresh-train``, before every epoch after the first the training
      digits get new distortions (validation and test images are untouched).
    """

    def __init__(
        self, cfg: Any, *, loc_lr_mult: float = 1.0, regenerate: Callable[[int], torch.Tensor] | None = None
    ) -> None:
        self.loc_lr_mult = loc_lr_mult
        self.regenerate = regenerate
        super().__init__(cfg)

    def _setup_model(self) -> None:
        super()._setup_model()
        loc = [p for n, p in self.model.named_parameters() if ".localization." in f".{n}"]
        if not loc or self.loc_lr_mult == 1.0 or self.optimizer is None or self.scheduler is None:
            return
        ids = {id(p) for p in loc}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        cfg = self.cfg
        groups = [{"params": rest, "lr": cfg.lr}, {"params": loc, "lr": cfg.lr * self.loc_lr_mult}]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = self.make_scheduler(self.optimizer)

    def train_epoch(self, batches: Any = None) -> dict[str, float]:
        if self.regenerate is not None and batches is None and self.start_epoch > 0:
            base = self.splits.train
            idx = self.loaders.train.dataset.indices  # the training digits only, never the validation ones
            images = base.images.clone()
            images[idx] = self.regenerate(self.start_epoch)[idx]
            base.images = images
        return super().train_epoch(batches)


def rotation_metrics(model: torch.nn.Module, loader: Any, theta_d: torch.Tensor) -> dict[str, float] | None:
    """How much of the distortion's rotation the affine transformer undoes, over ``loader``'s images.

    ``theta_d`` ``(N, 2, 3)``: the distortion map of each of the loader's ``N`` images, in loader order.
    ``residual_rotation_deg``: mean ``|rotation(D o T)|`` (``visattn.functional.residual_rotation``), the
    turn left in the canonicalised digit (0: upright; a non-rotating transformer leaves the distortion's
    own ``distortion_rotation_deg``); ``rotation_slope``: least-squares slope of the residual against the
    distortion's angle (1: nothing undone, 0: all of it); ``mirrored``: share of warps with ``det <= 0``
    (no rotation; left out of the means). ``None`` for models without an affine transformer.
    """
    st = getattr(model, "st", None)
    if not isinstance(st, SpatialTransformer) or st.transform != "affine":
        return None
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        theta_t = torch.cat([st.localize(x.to(device)).reshape(-1, 2, 3).cpu() for x, _ in loader])
    if theta_t.shape[0] != theta_d.shape[0]:
        raise ValueError(
            f"theta_d must have one map per image: {theta_t.shape[0]} images, got {theta_d.shape[0]}"
        )
    res, angle = residual_rotation(theta_t, theta_d).double(), affine_rotation(theta_d).double()
    ok = ~res.isnan()
    a = angle[ok] - angle[ok].mean()
    slope = float((a * (res[ok] - res[ok].mean())).sum() / (a * a).sum())
    return {
        "residual_rotation_deg": round(float(res[ok].abs().mean()), 3),
        "distortion_rotation_deg": round(float(angle.abs().mean()), 3),
        "transformer_rotation_deg": round(float(affine_rotation(theta_t).double()[ok].abs().mean()), 3),
        "rotation_slope": round(slope, 4),
        "mirrored": round(float((~ok).double().mean()), 4),
        "n": int(theta_d.shape[0]),
    }


def val_rotation(model: torch.nn.Module, splits: Any, val_loader: Any) -> dict[str, float] | None:
    """:func:`rotation_metrics` on the engine's validation split (never trained on, never regenerated)."""
    params = splits.extras.get("train_params", {})
    if val_loader is None or "theta" not in params:
        return None
    return rotation_metrics(model, val_loader, params["theta"][val_loader.dataset.indices])


def run_config(name: str, size: int, args: argparse.Namespace) -> Any:
    """The engine configuration of one model: ``--steps`` in periods of ``--eval-every`` steps."""
    periods = -(-args.steps // args.eval_every)
    return train_config(
        model=name,
        model_kwargs=model_options(name, size, args),
        data=args.dataset,
        data_dir=args.data_dir,
        val_fraction=args.val_size / 60_000,
        limit_train=args.train_size or None,
        augment="none",
        epochs=periods,
        max_steps_per_epoch=args.eval_every,
        batch_size=args.batch_size,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=0.0,
        schedule="cosine",
        warmup_epochs=0.3 * periods,
        channels_last=args.channels_last,
        seed=args.seed,
        out=str(Path(args.runs) / f"{args.dataset}_{name}_s{args.seed}"),
        resume=args.resume,
        test_at_end=not args.no_test,
    )


def check_period(steps_per_epoch: int, args: argparse.Namespace) -> None:
    """Refuse a period (``--eval-every``) longer than one pass over the training set.

    The engine ends an epoch at the end of its loader, so such a period would silently be cut to one pass
    (``steps_per_epoch`` steps) and the run would train fewer than ``--steps`` steps (before 2026-12-07 the
    2,000-step periods of the config were cut to 906 steps of 64 this way).
    """
    if steps_per_epoch < args.eval_every:
        raise ValueError(
            f"--eval-every must be at most one pass over the training set ({steps_per_epoch} steps of "
            f"{args.batch_size}), got {args.eval_every}: the run would train "
            f"{steps_per_epoch * -(-args.steps // args.eval_every)} steps, not --steps {args.steps}"
        )


def train_one(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``name`` through the engine; the best-on-validation period's weights are tested once."""
    regenerate = None
    if args.fresh_train:
        source: list[torch.Tensor] = []  # the undistorted training digits, loaded on first use

        def regenerate(epoch: int) -> torch.Tensor:
            if not source:
                source.append(load_dataset("mnist", data_dir=args.data_dir).train.images)
            return distort(source[0], KINDS[args.dataset], seed=1_000_000 + 1000 * args.seed + epoch)[0]

    trainer = STNTrainer(run_config(name, size, args), loc_lr_mult=args.loc_lr_mult, regenerate=regenerate)
    check_period(trainer.steps_per_epoch, args)
    summary = trainer.run()
    model = trainer.model  # the best-on-validation weights (the engine reloads them for its test pass)
    if args.no_test:  # no test pass, so reload them here
        load_weights(model, trainer.out / "best.pt")
    if args.png and name.startswith("st_"):
        from visattn.viz import plot_warps

        x, _ = next(iter(trainer.test_loader))
        model.eval()
        plot_warps(model, x[:8], args.png, max_images=8)
    rotation = val_rotation(model, trainer.splits, trainer.val_loader)
    hist = summary["history"]
    best = max(hist, key=lambda h: h["val_top1"])
    steps = trainer.global_step
    return {
        "model": name,
        "transform": args.transform if name.startswith("st_") else None,
        "params": summary["params"],
        "steps": steps,
        "selected_step": best["epoch"] * args.eval_every,
        "val_error": 100.0 - best["val_top1"],
        "test_error": None if args.no_test else 100.0 - summary["test_top1"],
        "ms_per_step": 1000 * summary["train_time_s"] / max(1, steps),
        "val_rotation": rotation,
        "curve": [
            {
                "step": h["epoch"] * args.eval_every,
                "loss": h["train_loss"],
                "val_error": 100.0 - h["val_top1"],
            }
            for h in hist
        ],
    }


def time_steps(args: argparse.Namespace, size: int) -> None:
    """Median time of a training step per model, the models' steps interleaved (same machine load)."""
    torch.manual_seed(args.seed)
    models = {n: visattn.create_model(n, image_size=size) for n in args.models}
    opts = {n: torch.optim.Adam(m.parameters(), lr=args.lr) for n, m in models.items()}
    x = torch.randn(args.batch_size, 1, size, size)
    y = torch.randint(0, 10, (args.batch_size,))
    times: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.time_steps + 3):
        for n, m in models.items():
            t0 = time.perf_counter()
            loss = F.cross_entropy(m(x), y)
            opts[n].zero_grad(set_to_none=True)
            loss.backward()
            opts[n].step()
            times[n].append(time.perf_counter() - t0)
    for n, t in times.items():
        med = sorted(t[3:])[len(t[3:]) // 2]
        print(
            f"{n}: {1000 * med:.1f} ms/step (median of {args.time_steps}, batch {args.batch_size}, {size}x{size})"
        )


def _checkpoint_model(
    flag: str, path: str, size: int, args: argparse.Namespace
) -> tuple[str, torch.nn.Module]:
    """The one model of ``--models`` with the weights of ``path`` (``flag`` names the option in errors)."""
    if len(args.models) != 1:
        raise ValueError(f"{flag} needs exactly one model in --models, got {args.models}")
    name = args.models[0]
    model = visattn.create_model(name, **model_options(name, size, args))
    load_weights(model, path)
    return name, model


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.time_steps:
        sizes = {"mnist_rts": 42}
        time_steps(args, sizes.get(args.dataset, 28))
        return None
    ds = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    size = ds.image_size[0]
    if args.rotation_checkpoint:
        name, model = _checkpoint_model("--rotation-checkpoint", args.rotation_checkpoint, size, args)
        loaders = make_loaders(
            ds, batch_size=args.batch_size, val_fraction=args.val_size / 60_000, seed=args.seed, augment="none",
            eval_batch_size=250,
        )  # fmt: skip
        rotation = val_rotation(model, ds, loaders.val)
        print(f"{name} from {args.rotation_checkpoint}: validation rotation {rotation}")
        if args.png and loaders.val is not None:  # the warps of the first 8 validation images
            from visattn.viz import plot_warps

            plot_warps(model.eval(), next(iter(loaders.val))[0][:8], args.png, max_images=8)
        return write_result(
            args.out, {"dataset": args.dataset, "args": vars(args), "val_rotation": rotation}, argv=argv
        )
    if args.test_checkpoint:
        name, model = _checkpoint_model("--test-checkpoint", args.test_checkpoint, size, args)
        loaders = make_loaders(ds, batch_size=args.batch_size, val_fraction=0.0, eval_batch_size=250)
        print(f"{name} from {args.test_checkpoint}: test error {error_rate(model, loaders.test):.2f}%")
        return None
    results = []
    for name in args.models:
        r = train_one(name, size, args)
        rot = r["val_rotation"]
        test = "not scored" if r["test_error"] is None else f"{r['test_error']:.2f}%"
        print(
            f"{name}: test error {test} (val {r['val_error']:.2f}% at step {r['selected_step']}),"
            f" {r['ms_per_step']:.1f} ms/step, {r['params']} params"
            + (f", residual rotation {rot['residual_rotation_deg']:.1f} deg (val)" if rot else ""),
            flush=True,
        )
        results.append(r)
    summary = {
        "dataset": args.dataset,
        "args": vars(args),
        "results": results,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    print(f"total {summary['total_s']}s")
    return write_result(args.out, summary, argv=argv)


if __name__ == "__main__":
    main()
