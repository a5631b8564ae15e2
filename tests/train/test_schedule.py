"""The LR schedule is torch's schedulers, with the rates of the former closed-form multiplier;
top-k counts go through one helper."""

from __future__ import annotations

import itertools

import pytest
import torch

from visattn.train.metrics import topk_correct
from visattn.train.schedule import build_scheduler, load_scheduler_state, lr_multiplier


def _rates(kind, epochs, spe, warmup, step_epochs):
    total = epochs * spe
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = build_scheduler(
        opt, kind, total_steps=total, steps_per_epoch=spe, warmup_steps=warmup, step_epochs=step_epochs
    )
    out = []
    for _ in range(total + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    "kind, epochs, spe, warmup, step_epochs",
    [
        (k, e, s, w, se)
        for k, e, s, w, se in itertools.product(
            ["cosine", "step", "constant"], [1, 3], [1, 7], [0, 1, 2, 5], [[], [1, 2]]
        )
        if not (k == "step" and any(x * s < w for x in se))
    ],
)
def test_torch_schedulers_give_the_former_rates(kind, epochs, spe, warmup, step_epochs):
    f = lr_multiplier(
        kind, total_steps=epochs * spe, steps_per_epoch=spe, warmup_steps=warmup, step_epochs=step_epochs
    )
    expected = [0.1 * f(t) for t in range(epochs * spe + 1)]
    assert _rates(kind, epochs, spe, warmup, step_epochs) == pytest.approx(expected, abs=1e-12)


def test_scheduler_state_round_trips_and_legacy_lambda_state_is_replayed():
    def make():
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        return opt, build_scheduler(opt, "cosine", total_steps=20, steps_per_epoch=5, warmup_steps=3)

    opt, sched = make()
    for _ in range(7):
        opt.step()
        sched.step()
    # the LambdaLR state a checkpoint of the former engine holds, at the same step
    legacy_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    legacy = torch.optim.lr_scheduler.LambdaLR(
        legacy_opt, lr_multiplier("cosine", total_steps=20, steps_per_epoch=5, warmup_steps=3)
    )
    for _ in range(7):
        legacy_opt.step()
        legacy.step()
    for state, opt_state in ((sched.state_dict(), opt.state_dict()), (legacy.state_dict(), None)):
        opt2, sched2 = make()
        load_scheduler_state(sched2, state)  # the engine's order: scheduler, then optimiser
        if opt_state is not None:
            opt2.load_state_dict(opt_state)
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
        assert sched2.get_last_lr() == pytest.approx(
            [0.1 * lr_multiplier("cosine", total_steps=20, steps_per_epoch=5, warmup_steps=3)(8)]
        )


def test_step_epoch_inside_the_warmup_is_refused():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"step_epochs \[1\] fall inside the warm-up of 10 steps"):
        build_scheduler(opt, "step", total_steps=30, steps_per_epoch=5, warmup_steps=10, step_epochs=[1, 4])


def test_topk_correct_matches_a_direct_count():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g)
    target = torch.randint(0, 7, (50,), generator=g)
    ranks = (logits > logits.gather(1, target[:, None])).sum(1)  # how many classes score higher
    got = topk_correct(logits, target, ks=(1, 3, 5, 10))
    assert got.tolist() == [float((ranks < k).sum()) for k in (1, 3, 5, 10)]
    assert got[-1] == 50  # k beyond the class count counts every row
    with pytest.raises(ValueError, match="target"):
        topk_correct(logits, target[:3])


def test_a_run_checkpointed_with_the_former_lambda_schedule_resumes_on_the_same_rates(tmp_path, fmnist_small):
    from visattn.train import TrainConfig, Trainer
    from visattn.train.checkpoint import atomic_save, safe_load

    def cfg(name, **kw):
        return TrainConfig(
            model="mnist_cnn",
            data="npz",
            data_dir=str(fmnist_small),
            epochs=2,
            batch_size=64,
            limit_train=192,
            limit_eval=32,
            warmup_epochs=1.5,
            augment="none",
            out=str(tmp_path / name),
            progress=False,
            test_at_end=False,
            **kw,
        )

    full = Trainer(cfg("a"))
    full.run()
    part = Trainer(cfg("b"))
    part.run(stop_after=1)
    last = tmp_path / "b" / "last.pt"
    ck = safe_load(last)
    steps = ck["global_step"]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    legacy = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_multiplier("cosine", total_steps=6, steps_per_epoch=3, warmup_steps=4)
    )
    for _ in range(steps):
        opt.step()
        legacy.step()
    ck["scheduler"] = legacy.state_dict()  # what the former engine saved
    atomic_save(ck, last)
    resumed = Trainer(cfg("b", resume=True))
    resumed.run()
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in full.history], abs=1e-12)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
