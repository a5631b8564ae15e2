"""The training engine: one code path for a single CPU process and for ``torchrun`` DDP.

The training order comes from a ``DistributedSampler`` seeded by ``(seed, epoch)`` in every case
(``num_replicas=1`` in a single process), so a resumed run sees the same batches as an
uninterrupted one, and N processes together see exactly the global batches of one process.

``fit(TrainConfig)`` loads the data (validation split carved from the training set with a fixed
seed), builds the model (optionally loading ``weights`` and inserting attention with
``retrofit``), trains with SGD/AdamW, a warm-up + cosine/step schedule, label smoothing, optional
bf16 autocast, channels_last and ``torch.compile``; evaluates top-1/top-5 on the validation split
after every epoch; writes ``last.pt`` every epoch and ``best.pt`` on a better validation top-1
(atomically, on rank 0); and, at the end, evaluates the best-on-validation weights on the test set
once. ``resume=True`` continues from ``last.pt`` exactly (model, optimiser, scheduler, RNG states,
epoch, history).

Models that are not trained by plain cross-entropy follow the contract in docs/ARCHITECTURE.md:
``forward`` may return a dict with ``"logits"``; ``extra_losses(output, target)`` adds named
losses; ``uses_optimizer = False`` with ``train_step(x, y)`` replaces backward/step entirely.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset

from visattn.train.checkpoint import atomic_save, capture_rng, load_weights, restore_rng, safe_load
from visattn.train.config import TrainConfig, config_to_dict
from visattn.train.distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed
from visattn.train.logs import write_history, write_text_atomic
from visattn.train.pose import make_task
from visattn.train.schedule import lr_multiplier

__all__ = ["Trainer", "fit", "evaluate", "build_model", "logits_of", "check_model_fits"]


def logits_of(output: Any) -> torch.Tensor:
    """The logits ``(B, K)`` of a model output (a tensor, or a dict with ``"logits"``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    raise TypeError(f"a model must return logits or a dict with 'logits', got {type(output).__name__}")


def build_model(cfg: TrainConfig, *, num_classes: int, in_chans: int) -> nn.Module:
    """Create ``cfg.model``, load ``cfg.weights`` (weights-only) and apply ``cfg.retrofit``."""
    from visattn.models import create_model

    model = create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **cfg.model_kwargs)
    if cfg.weights:
        load_weights(model, cfg.weights, strict=True)
    if cfg.retrofit:
        from visattn import retrofit as _retrofit  # type: ignore[attr-defined]

        _retrofit(model, attention=cfg.retrofit, **cfg.retrofit_kwargs)
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


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (%) over ``loader``, summed over all processes."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = logits_of(model(x)).float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                hit[:, 0].sum().double(),
                hit.any(dim=1).sum().double(),
                torch.tensor(float(y.numel()), dtype=torch.float64, device=device),
            ]
        )
    all_reduce_sum(sums)
    n = max(1.0, sums[3].item())
    return {
        "loss": sums[0].item() / n,
        "top1": 100 * sums[1].item() / n,
        "top5": 100 * sums[2].item() / n,
        "n": int(sums[3].item()),
    }


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


class Trainer:
    """Holds the model, optimiser, schedule and loaders of one run; ``run()`` trains it."""

    def __init__(self, cfg: TrainConfig, *, info: DistInfo | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.info = info or init_distributed(cfg.device)
        self.out = Path(cfg.out)
        self._setup_determinism()
        self.task = make_task(cfg.task)  # None: classification (this file's code); else its loss/metric
        self.metric = self.task.metric if self.task is not None else "top1"
        self._evaluate = self.task.evaluate if self.task is not None else evaluate
        self._setup_data()
        self._setup_model()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best_top1 = -math.inf
        self.global_step = 0
        self.tb: Any = None
        self.tb_images: Any = None
        self.initial_val_top1: float | None = None
        if cfg.resume:
            self._resume()

    # ----------------------------------------------------------------- set-up
    def _setup_determinism(self) -> None:
        torch.manual_seed(self.cfg.seed)
        import random

        import numpy as np

        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _setup_data(self) -> None:
        from visattn.data import load_dataset, make_loaders

        cfg, info = self.cfg, self.info
        if cfg.batch_size % info.world_size:
            raise ValueError(
                f"batch_size {cfg.batch_size} (the global batch) must be divisible by the "
                f"{info.world_size} processes"
            )
        self.splits = load_dataset(
            cfg.data,
            data_dir=cfg.data_dir,
            download=cfg.download and info.is_main,
            seed=cfg.seed,
            **cfg.data_kwargs,
        )
        local_bs = cfg.batch_size // info.world_size
        eval_bs = cfg.eval_batch_size or max(local_bs, 256)
        self.loaders = (self.task.make_loaders if self.task is not None else make_loaders)(
            self.splits,
            batch_size=local_bs,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            augment=cfg.augment,
            num_workers=cfg.num_workers,
            distributed=info.distributed,
            limit_train=cfg.limit_train,
            eval_batch_size=eval_bs,
        )
        self.train_sampler: DistributedSampler = DistributedSampler(
            self.loaders.train.dataset,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        self.train_loader = DataLoader(
            self.loaders.train.dataset,
            batch_size=local_bs,
            sampler=self.train_sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
            collate_fn=self.loaders.train.collate_fn,
            pin_memory=info.device.type == "cuda",
            persistent_workers=cfg.num_workers > 0,
        )
        self.val_loader = _shard(self.loaders.val, info, eval_bs)
        self.test_loader = _shard(self.loaders.test, info, eval_bs)

    def _setup_model(self) -> None:
        cfg, info = self.cfg, self.info
        model = build_model(cfg, num_classes=self.splits.num_classes, in_chans=self.splits.in_chans)
        check_model_fits(model, cfg.model, self.splits.in_chans, self.splits.image_size)
        if cfg.sync_bn and info.distributed and info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(info.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # the raw module: state_dict, extra_losses, train_step
        self.uses_optimizer = getattr(model, "uses_optimizer", True)
        self.inserted_only = False
        self.runner = self._wrap()
        self.steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        if self.uses_optimizer:
            if not params:
                raise ValueError(f"model {cfg.model!r} has no trainable parameters")
            if cfg.optimizer == "sgd":
                self.optimizer = torch.optim.SGD(
                    params,
                    lr=cfg.lr,
                    momentum=cfg.momentum,
                    nesterov=cfg.nesterov and cfg.momentum > 0,
                    weight_decay=cfg.weight_decay,
                )
            else:
                self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            mult = lr_multiplier(
                cfg.schedule,
                total_steps=cfg.epochs * self.steps_per_epoch,
                steps_per_epoch=self.steps_per_epoch,
                warmup_steps=int(cfg.warmup_epochs * self.steps_per_epoch),
                step_epochs=cfg.step_epochs,
                gamma=cfg.step_gamma,
            )
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, mult)
        self.extra_losses = getattr(model, "extra_losses", None)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def _wrap(self) -> nn.Module:
        """The module the training step calls: DDP (for gradient sync) and/or ``torch.compile``."""
        info, runner = self.info, self.model
        if info.distributed and self.uses_optimizer:
            runner = DDP(self.model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
        if self.cfg.compile:
            runner = torch.compile(runner)  # type: ignore[assignment]
        return runner

    def _set_inserted_only(self, flag: bool) -> None:
        """Train only the retrofitted attention (``flag``) or every parameter the optimiser holds.

        The optimiser was built over all trainable parameters; frozen ones get no gradient, so SGD and
        AdamW leave them (and their weight decay) untouched. DDP is re-wrapped, since it registers its
        gradient hooks on the parameters that require a gradient when it is built.
        """
        if flag == self.inserted_only:
            return
        from visattn.retrofit import freeze_except_inserted

        if flag:
            self._trainable = [p for p in self.model.parameters() if p.requires_grad]
            freeze_except_inserted(self.model)
        else:
            for p in self._trainable:
                p.requires_grad_(True)
        self.inserted_only = flag
        self.runner = self._wrap()

    # ------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epoch": self.start_epoch,
            "global_step": self.global_step,
            "best_top1": self.best_top1,
            "history": self.history,
            "rng": capture_rng(),
            "config": config_to_dict(self.cfg),
        }

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if self.info.is_main:  # temp files of writes a kill interrupted (see atomic_save)
            for stale in self.out.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        if not path.is_file():
            if self.info.is_main:
                print(f"resume: no checkpoint at {path}, starting from scratch")
            return
        ck = safe_load(path, map_location=self.info.device)
        self.model.load_state_dict(ck["model"])
        if self.optimizer is not None and ck["optimizer"] is not None:
            self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        self.start_epoch, self.global_step = ck["epoch"], ck["global_step"]
        self.best_top1, self.history = ck["best_top1"], list(ck["history"])
        restore_rng(ck["rng"])
        if self.info.is_main:
            print(f"resumed from {path} at epoch {self.start_epoch}")

    def _check_finite_state(self) -> None:
        """Raise before saving weights that a finite loss with an inf/NaN gradient poisoned
        (one pass over the parameters per epoch), so ``last.pt`` keeps the last good ones.
        Buffers are not checked: some hold -inf by design (attention masks)."""
        for name, t in self.model.named_parameters():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise FloatingPointError(
                    f"non-finite values in {name!r} after epoch {self.start_epoch + 1}; not saved, "
                    f"{self.out / 'last.pt'} keeps the last good weights; lower lr or enable grad_clip"
                )

    def _save(self, is_best: bool) -> None:
        if not self.info.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        state = self.state()
        # best.pt first: a kill between the two writes then redoes this epoch on resume (and
        # rewrites best.pt identically); the other order would leave best.pt one best behind.
        if is_best:
            atomic_save(
                {
                    "model": state["model"],
                    "epoch": self.start_epoch,
                    "val_top1": self.best_top1,
                    "config": state["config"],
                },
                self.out / "best.pt",
            )
        atomic_save(state, self.out / "last.pt")
        write_history(self.out, self.history)

    # ---------------------------------------------------------------- training
    def train_step(self, x: torch.Tensor, y: Any) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch; returns detached loss terms and the correct count."""
        if not self.uses_optimizer:
            stats = self.model.train_step(x, y)  # type: ignore[operator]
            return {k: torch.as_tensor(v, dtype=torch.float32) for k, v in stats.items()}
        assert self.optimizer is not None and self.scheduler is not None
        with _autocast(self.info.device, self.cfg.amp):
            out = self.runner(x)
            if self.task is not None:
                loss, terms = self.task.loss(out, y)
            else:
                logits = logits_of(out)
                loss = self.criterion(logits.float(), y)
                terms = {"ce": loss.detach()}
            if self.extra_losses is not None:
                for name, value in self.extra_losses(out, y).items():
                    loss = loss + value
                    terms[name] = value.detach()
        if not torch.isfinite(loss):
            msg = (
                f"non-finite loss {loss.item()} at epoch {self.start_epoch}, step {self.global_step} "
                f"(terms: { {k: v.item() for k, v in terms.items()} }); lower lr or enable grad_clip"
            )
            if self.cfg.nonfinite == "raise":
                raise FloatingPointError(msg)
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": torch.tensor(1.0)}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        terms["loss"] = loss.detach()
        if self.task is None:
            terms["correct"] = (logits.detach().argmax(1) == y).sum().float()
        return terms

    def train_epoch(self, batches: Iterable | None = None) -> dict[str, float]:
        """Train over ``batches`` (default: this epoch's training loader); return mean terms."""
        self.model.train()
        if batches is None:
            self.train_sampler.set_epoch(self.start_epoch)
            batches = self.train_loader
        dev, cl = self.info.device, self.cfg.channels_last
        sums: dict[str, torch.Tensor] = {}
        n_img, t0 = 0, time.perf_counter()
        bar = None
        if self.cfg.progress and self.info.is_main:
            from tqdm import tqdm

            bar = tqdm(
                total=self.steps_per_epoch,
                desc=f"epoch {self.start_epoch + 1}/{self.cfg.epochs}",
                unit="step",
                mininterval=1.0,
                leave=False,
            )
        n_steps = 0
        for i, (x, y) in enumerate(itertools.islice(batches, self.steps_per_epoch)):
            x = x.to(dev, non_blocking=True)
            y = self.task.to_device(y, dev) if self.task is not None else y.to(dev, non_blocking=True)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            terms = self.train_step(x, y)
            for k, v in terms.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            n_img += x.shape[0]
            n_steps += 1
            self.global_step += 1
            if self.tb_images is not None:
                self.tb_images.maybe_log(self.tb, self.model, self.global_step)
            if bar is not None:
                bar.update(1)
                if i % self.cfg.log_every == 0:
                    rate = n_img * self.info.world_size / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix(
                        loss=f"{terms.get('loss', terms.get('ce', torch.nan)):.3f}", img_s=f"{rate:.0f}"
                    )
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t0
        n_steps = max(1, n_steps)
        out = {f"train_{k}": v.item() / n_steps for k, v in sums.items() if k != "correct"}
        if "correct" in sums:
            out["train_top1"] = 100 * sums["correct"].item() / max(1, n_img)
        out["train_images_per_s"] = n_img * self.info.world_size / max(1e-9, elapsed)
        out["train_time_s"] = elapsed
        return out

    def _validate(self) -> dict[str, float]:
        """Validation metrics of the current weights (through DDP / compile when the optimiser trains)."""
        assert self.val_loader is not None
        return self._evaluate(
            self.runner if self.uses_optimizer else self.model,
            self.val_loader,
            self.info.device,
            amp=self.cfg.amp,
            channels_last=self.cfg.channels_last,
        )

    def _select_initial(self) -> bool:
        """Whether the starting weights compete for ``best.pt`` (``select_initial``; auto: when the run
        starts from given weights, e.g. fine-tuning or a retrofit, or wraps a frozen ``base``)."""
        if self.cfg.select_initial is not None:
            return self.cfg.select_initial
        return self.cfg.weights is not None or isinstance(getattr(self.model, "base", None), nn.Module)

    def _validate_initial(self) -> None:
        """Score the starting weights on validation; they are ``best.pt`` (epoch 0) until an epoch beats them.

        Training can make a pretrained network worse; with this, the selected checkpoint is never worse
        on validation than where the run started. Only ``best.pt`` is written (no ``last.pt``: a run
        killed before epoch 1 restarts from scratch and repeats this).
        """
        cfg, dev = self.cfg, self.info.device
        # a DataLoader draws its base seed from the global RNG: fork it, so the training stream is the
        # same with or without this evaluation
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            val = self._validate()
        self.initial_val_top1 = val[self.metric]
        self.best_top1 = val[self.metric]
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            state = {
                "model": self.model.state_dict(),
                "epoch": 0,
                "val_top1": self.best_top1,
                "config": config_to_dict(cfg),
            }
            atomic_save(state, self.out / "best.pt")
            if cfg.progress:
                print(json.dumps({"epoch": 0, f"val_{self.metric}": round(val[self.metric], 4)}))

    def _attention_image_logger(self) -> Any:
        """A fixed batch (the first validation images, else test images) for TensorBoard attention views."""
        from visattn.train.tb_images import AttentionImageLogger

        loader = self.val_loader if self.val_loader is not None else self.test_loader
        if loader is None:
            raise ValueError("tb_images_every needs validation or test images; this dataset has neither")
        x, y = next(iter(loader))
        x, y = x[:8], y[:8]
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        names = getattr(self.splits, "class_names", None)
        return AttentionImageLogger(x, y, every=self.cfg.tb_images_every, class_names=names)

    def run(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train from ``start_epoch`` to ``cfg.epochs``; return the summary (also ``summary.json``).

        ``stop_after=k`` returns right after epoch ``k``'s checkpoint, as a run interrupted there would
        (no test evaluation); ``resume=True`` then continues it.
        """
        cfg = self.cfg
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.out / "tb"))
                if cfg.tb_images_every:
                    self.tb_images = self._attention_image_logger()
        try:
            if self.start_epoch == 0 and self.val_loader is not None and self._select_initial():
                self._validate_initial()
            while self.start_epoch < cfg.epochs:
                if cfg.retrofit and cfg.retrofit_warmup_epochs:
                    self._set_inserted_only(self.start_epoch < cfg.retrofit_warmup_epochs)
                row: dict[str, Any] = {"epoch": self.start_epoch + 1}
                row.update(self.train_epoch())
                self._check_finite_state()
                if self.optimizer is not None:
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                if self.val_loader is not None:
                    val = self._validate()
                    row.update({f"val_{k}": v for k, v in val.items()})
                    is_best = val[self.metric] > self.best_top1
                    self.best_top1 = max(self.best_top1, val[self.metric])
                else:
                    is_best = True
                self.history.append(row)
                self.start_epoch += 1
                self._save(is_best)
                if self.tb is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "epoch":
                            self.tb.add_scalar(k, v, row["epoch"])
                if self.info.is_main and cfg.progress:
                    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
                if stop_after is not None and self.start_epoch >= stop_after:
                    return {"history": self.history, "out": str(self.out), "stopped_after": self.start_epoch}
            barrier()
            summary = self._finish()
        finally:
            if self.tb is not None:
                self.tb.close()
        return summary

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        summary: dict[str, Any] = {
            "model": cfg.model,
            "data": cfg.data,
            "epochs": cfg.epochs,
            "params": sum(p.numel() for p in self.model.parameters()),
            f"best_val_{self.metric}": self.best_top1 if self.val_loader is not None else None,
            "initial_val_top1": self.initial_val_top1,
            "history": self.history,
            "out": str(self.out),
        }
        if cfg.test_at_end and self.test_loader is not None:
            best = self.out / "best.pt"
            barrier()
            if best.is_file():
                self.model.load_state_dict(safe_load(best, map_location=self.info.device)["model"])
            test = self._evaluate(
                self.model, self.test_loader, self.info.device, amp=cfg.amp, channels_last=cfg.channels_last
            )
            summary.update({f"test_{k}": v for k, v in test.items()})
        summary["train_time_s"] = sum(h.get("train_time_s", 0.0) for h in self.history)
        if self.info.is_main:
            write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=1))
        return summary


def fit(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg`` to the end (single process or under ``torchrun``); return the summary."""
    info = init_distributed(cfg.device)
    try:
        summary = Trainer(cfg, info=info).run()
        barrier()  # every rank reaches the end before the group is torn down (a gloo peer closing early can abort)
        return summary
    finally:
        cleanup_distributed()
