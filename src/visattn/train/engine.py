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

import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from visattn.checkpoint import atomic_save, capture_rng, restore_rng, safe_load
from visattn.train.build import build_data, build_model, check_model_fits, data_info
from visattn.train.callbacks import Callback
from visattn.train.config import TrainConfig, config_to_dict
from visattn.train.distributed import DistInfo, barrier, cleanup_distributed, init_distributed
from visattn.train.evaluate import autocast as _autocast
from visattn.train.evaluate import evaluate, logits_of
from visattn.train.logs import write_history, write_text_atomic
from visattn.train.metrics import topk_correct
from visattn.train.pose import make_task, scorer
from visattn.train.schedule import build_scheduler, load_scheduler_state

__all__ = ["Trainer", "fit", "evaluate", "build_model", "logits_of", "check_model_fits"]

log = logging.getLogger("visattn.train")


class Trainer:
    """Holds the model, optimiser, schedule and loaders of one run; ``run()`` trains it."""

    def __init__(
        self, cfg: TrainConfig, *, info: DistInfo | None = None, callbacks: Sequence[Callback] = ()
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.info = info or init_distributed(cfg.device)
        self.out = Path(cfg.out)
        self._setup_determinism()
        self.task = make_task(cfg.task)  # None: classification (this file's code); else its loss/metric
        score = scorer(cfg.task)
        self.metric, self._evaluate = score.metric, score.evaluate
        self._setup_data()
        self._setup_model()
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.best_top1 = -math.inf
        self.global_step = 0
        self.tb: Any = None
        self.callbacks = list(callbacks)
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
        data = build_data(
            self.cfg, self.info, make_loaders=self.task.make_loaders if self.task is not None else None
        )
        self.splits, self.loaders, self.train_sampler = data.splits, data.loaders, data.train_sampler
        self.train_loader, self.val_loader, self.test_loader = data.train, data.val, data.test

    def make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """The run's learning-rate schedule (``cfg.schedule``, warm-up, per-step) over ``optimizer``; a
        subclass that rebuilds the optimiser (e.g. with parameter groups) calls it again."""
        cfg = self.cfg
        return build_scheduler(
            optimizer,
            cfg.schedule,
            total_steps=cfg.epochs * self.steps_per_epoch,
            steps_per_epoch=self.steps_per_epoch,
            warmup_steps=int(cfg.warmup_epochs * self.steps_per_epoch),
            step_epochs=cfg.step_epochs,
            gamma=cfg.step_gamma,
        )

    def _setup_model(self) -> None:
        cfg, info = self.cfg, self.info
        model = build_model(
            cfg,
            num_classes=self.splits.num_classes,
            in_chans=self.splits.in_chans,
            image_size=self.splits.image_size,
        )
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
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
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
            self.scheduler = self.make_scheduler(self.optimizer)
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
            "data_info": data_info(self.splits),
        }

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if self.info.is_main:  # temp files of writes a kill interrupted (see atomic_save)
            for stale in self.out.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        if not path.is_file():
            if self.info.is_main:
                log.warning("resume: no checkpoint at %s, starting from scratch", path)
            return
        ck = safe_load(path, map_location=self.info.device)
        self.model.load_state_dict(ck["model"])
        if self.scheduler is not None and ck["scheduler"] is not None:  # first: a legacy state is replayed
            load_scheduler_state(self.scheduler, ck["scheduler"])
        if self.optimizer is not None and ck["optimizer"] is not None:
            self.optimizer.load_state_dict(ck["optimizer"])
        self.start_epoch, self.global_step = ck["epoch"], ck["global_step"]
        self.best_top1, self.history = ck["best_top1"], list(ck["history"])
        restore_rng(ck["rng"])
        if self.info.is_main:
            log.info("resumed from %s at epoch %d", path, self.start_epoch)

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
                    "data_info": state["data_info"],
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
            terms["correct"] = topk_correct(logits.detach(), y, (1,))[0].float()
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
            for cb in self.callbacks:
                cb.on_step_end(self)
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
            desc="validation" if self.cfg.progress and self.info.is_main else None,
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
                "data_info": data_info(self.splits),
            }
            atomic_save(state, self.out / "best.pt")
            if cfg.progress:
                log.info(json.dumps({"epoch": 0, f"val_{self.metric}": round(val[self.metric], 4)}))

    def fixed_batch(self, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` validation images (else test images) and labels, as the model takes them
        (e.g. for attention pictures during training)."""
        loader = self.val_loader if self.val_loader is not None else self.test_loader
        if loader is None:
            raise ValueError("this dataset has neither validation nor test images")
        x, y = next(iter(loader))
        x, y = x[:n], y[:n]
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

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
                if cfg.tb_images_every and not any(
                    getattr(cb, "writes_attention_images", False) for cb in self.callbacks
                ):
                    warnings.warn(
                        f"tb_images_every={cfg.tb_images_every} needs an attention-image callback: pass "
                        "callbacks=[visattn.callbacks.AttentionImages()] (the visattn command adds it)",
                        UserWarning,
                        stacklevel=2,
                    )
        try:
            for cb in self.callbacks:
                cb.on_train_start(self)
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
                for cb in self.callbacks:
                    cb.on_epoch_end(self, row)
                if self.tb is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k != "epoch":
                            self.tb.add_scalar(k, v, row["epoch"])
                if self.info.is_main and cfg.progress:
                    log.info(
                        json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
                    )
                if stop_after is not None and self.start_epoch >= stop_after:
                    return {"history": self.history, "out": str(self.out), "stopped_after": self.start_epoch}
            barrier()
            summary = self._finish()
            for cb in self.callbacks:
                cb.on_train_end(self, summary)
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
                self.model,
                self.test_loader,
                self.info.device,
                amp=cfg.amp,
                channels_last=cfg.channels_last,
                desc="test" if cfg.progress and self.info.is_main else None,
            )
            summary.update({f"test_{k}": v for k, v in test.items()})
        summary["train_time_s"] = sum(h.get("train_time_s", 0.0) for h in self.history)
        if self.info.is_main:
            write_text_atomic(self.out / "summary.json", json.dumps(summary, indent=1))
        return summary


def fit(cfg: TrainConfig, *, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train ``cfg`` to the end (single process or under ``torchrun``); return the summary.

    ``callbacks``: objects with the hooks of :class:`~visattn.train.callbacks.Callback`.
    """
    info = init_distributed(cfg.device)
    try:
        summary = Trainer(cfg, info=info, callbacks=callbacks).run()
        barrier()  # every rank reaches the end before the group is torn down (a gloo peer closing early can abort)
        return summary
    finally:
        cleanup_distributed()
