"""dasNet (visattn.models.dasnet): exactness at gains 1, batched population, frozen base, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visattn.attention import AttentionTap
from visattn.models import create_model
from visattn.models.dasnet import DasNet, dasnet
from visattn.models.mnist_cnn import MnistCNN


def _base(seed: int = 0) -> MnistCNN:
    torch.manual_seed(seed)
    net = MnistCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from train mode
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _data(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_gains_of_one_give_exactly_the_base_outputs():
    base = _base()
    x, _ = _data()
    ref = base(x)
    assert torch.equal(DasNet(base, num_classes=10, passes=1)(x), ref)
    exact = DasNet(base, num_classes=10, passes=3, channels_last=False)
    assert torch.equal(exact(x), ref)  # mu = 0: every gain is 2 sigmoid(0) = 1 exactly
    net = DasNet(base, num_classes=10, passes=3)  # passes 2..3 run channels-last: float tolerance
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
    net.calibrate(x)
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
    passes = net.forward_passes(x)
    assert passes["logits"].shape == (3, 12, 10) and passes["gains"].shape == (3, 12, 96)
    assert torch.equal(passes["gains"], torch.ones(3, 12, 96))
    assert torch.equal(passes["logits"][0], ref)  # pass 1 is the base's own forward


def _reference_logits(net: DasNet, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Last-pass logits ``(P, n, K)`` computed the plain way: every candidate alone, the whole base
    (NCHW) in every pass, hooks written here, no sharing of pass 1 or of any prefix."""
    modules = dict(net.base.named_modules())
    nf, nd = net.num_filters, net.obs_dim
    starts = [sum(net.filter_counts[:i]) for i in range(len(net.steer))]
    out = []
    for th in theta:
        gains = None
        for _ in range(net.passes):
            feats: dict[int, torch.Tensor] = {}

            def hook(o, i, g, feats=feats):
                y = o if g is None else o * g[:, :, None, None]
                feats[i] = y.mean((2, 3))
                return y

            hooks = []
            for i, name in enumerate(net.steer):
                g = None if gains is None else gains[:, starts[i] : starts[i] + net.filter_counts[i]]
                hooks.append(modules[name].register_forward_hook(lambda m, a, o, i=i, g=g: hook(o, i, g)))
            with torch.no_grad():
                logits = net.base(x)
            for h in hooks:
                h.remove()
            obs = torch.cat([feats[i] for i in range(len(net.steer))] + [logits.softmax(1)], 1)
            o = (obs - net.obs_mean) / net.obs_std
            gains = 2 * torch.sigmoid(o @ th[: nf * nd].view(nf, nd).T + th[nf * nd :])
        out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize(
    "steer, channels_last",
    [(None, True), (None, False), (["stage2.conv", "stage1.conv"], True), (["stage2.bn", "stage1.bn"], True)],
)
def test_shared_pass1_and_prefix_equal_the_unshared_computation(steer, channels_last):
    base = _base()
    before = _snapshot(base)
    net = DasNet(base, num_classes=10, passes=3, steer=steer, channels_last=channels_last, max_images=24)
    x, _ = _data()
    net.calibrate(x)
    theta = 0.05 * torch.randn(4, net.policy_dim, generator=torch.Generator().manual_seed(3))
    ref = _reference_logits(net, x, theta)
    got = net.population_logits(x, theta)  # 2 candidates per forward of the base
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref[0], ref[1], atol=1e-3)  # the candidates' gains really matter
    assert all("forward" not in m.__dict__ for m in base.modules())  # the cache is gone after the call
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())


class _CountingConv(nn.Conv2d):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


class _TinyNet(nn.Module):
    """stem -> relu -> a -> relu -> b -> pool -> linear; ``shared`` calls ``a`` twice."""

    def __init__(self, shared: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)  # before the first steered layer: runs in every pass
        self.a = _CountingConv(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.shared = shared
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(torch.relu(self.stem(x)))
        if self.shared:
            h = self.a(torch.relu(h))
        return self.fc(self.b(torch.relu(h)).mean((2, 3)))


@pytest.mark.parametrize("shared", [False, True])
def test_first_steered_layer_runs_once_per_call_unless_it_fires_twice(shared):
    torch.manual_seed(0)
    base = _TinyNet(shared).eval()
    net = DasNet(base, num_classes=10, passes=4, steer=["b", "a"], population=4)
    x, _ = _data(6)
    net.calibrate(x)
    theta = 0.3 * torch.randn(5, net.policy_dim, generator=torch.Generator().manual_seed(1))
    _CountingConv.calls = 0
    got = net.population_logits(x, theta)
    # shared: "a" fires twice (its 2nd input depends on gains), so nothing is cached: 2 calls x 4 passes
    assert _CountingConv.calls == (8 if shared else 1)
    torch.testing.assert_close(got, _reference_logits(net, x, theta), rtol=1e-5, atol=1e-5)
    alone = torch.stack([net.population_logits(x, theta[k : k + 1])[0] for k in range(5)])
    torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-5)


def test_batched_population_equals_candidates_one_at_a_time():
    net = DasNet(_base(), num_classes=10, passes=3, population=6, max_images=128)
    x, y = _data()
    net.calibrate(x)
    theta = 0.05 * torch.randn(5, net.policy_dim, generator=torch.Generator().manual_seed(0))
    batched = net.population_logits(x, theta)
    alone = torch.stack([net.population_logits(x, theta[k : k + 1])[0] for k in range(5)])
    assert batched.shape == (5, 12, 10)
    assert torch.allclose(batched, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # candidates really differ
    fit = net.population_fitness(x, y, theta)
    ref = torch.stack([net.population_fitness(x, y, theta[k : k + 1])[0] for k in range(5)])
    assert torch.allclose(fit, ref, atol=1e-5)
    net.max_images = 24  # two candidates per forward of the base: the same numbers in chunks
    assert torch.allclose(net.population_logits(x, theta), batched, atol=1e-5)


def test_policy_gains_reach_the_steered_layers_through_taps():
    net = DasNet(_base(), num_classes=10, passes=2, sigma0=0.5)
    x, _ = _data(4)
    net.calibrate(x)
    net.search.mu.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, name=name: seen.setdefault(name, []).append(o))
        for name, m in net.named_modules()
        if isinstance(m, AttentionTap)
    ]
    out = net(x)
    for h in hooks:
        h.remove()
    assert sorted(seen) == ["gains.0.tap", "gains.1.tap"]
    assert [t.shape for t in seen["gains.1.tap"]] == [(4, 64), (4, 64)]  # pass 1 and pass 2
    assert torch.equal(seen["gains.0.tap"][0], torch.ones(4, 32))
    g2 = seen["gains.0.tap"][1]
    assert bool(((g2 > 0) & (g2 < 2)).all()) and not torch.equal(g2, torch.ones(4, 32))
    passes = net.forward_passes(x)
    assert torch.allclose(passes["gains"][1, :, :32], g2)
    assert torch.allclose(passes["logits"][-1], out)
    assert not torch.allclose(out, net.base(x))


def test_search_improves_fitness_and_never_touches_the_base():
    base = _base()
    before = _snapshot(base)
    net = DasNet(base, num_classes=10, passes=2, population=10, sigma0=0.1, seed=0)
    assert all(not p.requires_grad for p in net.parameters())
    x, y = _data(32)
    net.train()
    assert net.training and not net.base.training  # BatchNorm keeps its running statistics
    f0 = net.population_fitness(x, y, net.search.mu[None]).item()
    stats = net.train_step(x, y)
    assert set(stats) >= {"loss", "fitness_mean", "fitness_best", "sigma_mean"}
    assert all(isinstance(v, float) for v in stats.values())
    for _ in range(7):
        net.train_step(x, y)
    f1 = net.population_fitness(x, y, net.search.mu[None]).item()
    assert f1 > f0 + 0.01, (f0, f1)
    after = net.base.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical after the search
    assert all("forward" not in m.__dict__ for m in base.modules())  # no cached forward left behind
    assert int(net.search.iteration) == 8 and bool(net.calibrated)


def test_resume_from_state_dict_gives_the_identical_trajectory():
    x, y = _data(8)
    a = DasNet(_base(), num_classes=10, passes=2, population=4, seed=5)
    for _ in range(2):
        a.train_step(x, y)
    state = _snapshot(a)
    for _ in range(2):
        a.train_step(x, y)
    b = DasNet(_base(), num_classes=10, passes=2, population=4, seed=123)
    b.load_state_dict(state)
    for _ in range(2):
        b.train_step(x, y)
    assert torch.equal(a.search.mu, b.search.mu) and torch.equal(a.search.sigma, b.search.sigma)
    assert torch.equal(a.obs_mean, b.obs_mean) and torch.equal(a(x), b(x))


def test_eval_is_deterministic_and_accuracy_fitness_counts_hits():
    net = DasNet(_base(), num_classes=10, passes=3, fitness="accuracy", population=4)
    x, y = _data(10)
    net.train_step(x, y)
    net.eval()
    assert torch.equal(net(x), net(x))
    fit = net.population_fitness(x, y, net.search.ask()[1])
    assert bool(((fit * 10).round() == fit * 10).all()) and bool(((fit >= 0) & (fit <= 1)).all())


def test_steer_named_layers_including_norm_layers():
    base = _base()
    net = DasNet(base, num_classes=10, passes=2, steer=["stage2.bn"])
    assert net.filter_counts == [64] and net.policy_dim == 64 * 74 + 64
    x, _ = _data(3)
    torch.testing.assert_close(net(x), base(x), rtol=1e-5, atol=1e-5)
    built = dasnet(base=base, steer="stage1.conv, stage2.bn")
    assert built.steer == ["stage1.conv", "stage2.bn"] and built.num_filters == 96


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_builder_loads_a_weights_file(tmp_path, suffix):
    base = _base(seed=4)
    path = tmp_path / f"base{suffix}"
    if suffix == ".pt":
        torch.save({"model": base.state_dict()}, path)
    else:
        from visattn.checkpoint import export_safetensors

        export_safetensors(base, path)
    net = create_model(
        "dasnet",
        base=str(path),
        base_model="mnist_cnn",
        num_classes=10,
        in_chans=1,
        passes=2,
        channels_last=False,
    )
    assert isinstance(net, DasNet) and not net.channels_last
    x, _ = _data(4)
    assert torch.equal(net(x), base(x))


def test_builder_loads_shipped_weights_by_id(tmp_path):
    """``base="NAME.TAG"``: the shipped weights (what a shipped dasNet's card names), not a file."""
    shipped = create_model("mnist_cnn", pretrained="mnist")
    net = create_model("dasnet", base="mnist_cnn.mnist", passes=2, channels_last=False)
    x, _ = _data(4)
    assert torch.equal(net(x), shipped(x))  # gains start at 1: exactly the shipped base
    assert all(not p.requires_grad for p in net.base.parameters())
    with pytest.raises(ValueError, match="holds a 'mnist_cnn', but base_model is 'resnet20'"):
        create_model("dasnet", base="mnist_cnn.mnist", base_model="resnet20")
    with pytest.raises(ValueError, match="num_classes"):  # the card's network has 10 classes
        create_model("dasnet", base="mnist_cnn.mnist", num_classes=5)
    local = tmp_path / "mnist_cnn.mnist"  # a file of that name wins over the shipped id
    torch.save({"model": _base(seed=4).state_dict()}, local)
    assert torch.equal(
        create_model("dasnet", base=str(local), passes=2, channels_last=False)(x), _base(seed=4)(x)
    )


def test_shipped_dasnet_file_holds_only_its_policy_and_its_base_comes_from_the_card():
    """``dasnet.fashion_mnist`` stores no ``base.*`` keys: they are the shipped base's, checked at load."""
    from safetensors import safe_open

    from visattn.models._pretrained import WEIGHTS_DIR, load_card, load_pretrained

    card = load_card(WEIGHTS_DIR / "dasnet.fashion_mnist.json")
    with safe_open(str(WEIGHTS_DIR / card["file"]), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("base.") for k in keys)
    net = create_model("dasnet", pretrained="fashion_mnist")
    base = create_model("mnist_cnn", pretrained="fashion_mnist")
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in net.base.state_dict().items())
    other = dasnet(base=_base(seed=5), passes=2)  # a base not built from the card's shipped weights
    with pytest.raises(ValueError, match="was not built from them"):
        load_pretrained(other, card, WEIGHTS_DIR / card["file"])


def test_bad_inputs_raise(tmp_path):
    base = _base()
    with pytest.raises(ValueError, match="no layer 'nope'"):
        DasNet(base, num_classes=10, steer=["nope"])
    with pytest.raises(ValueError, match="out_channels"):
        DasNet(base, num_classes=10, steer=["stage1.pool"])
    with pytest.raises(TypeError, match="steer"):
        DasNet(base, num_classes=10, steer="stage1.conv")
    with pytest.raises(ValueError, match="unique"):
        DasNet(base, num_classes=10, steer=["stage1.conv", "stage1.conv"])
    with pytest.raises(ValueError, match="passes"):
        DasNet(base, num_classes=10, passes=0)
    with pytest.raises(ValueError, match="fitness"):
        DasNet(base, num_classes=10, fitness="reward")
    with pytest.raises(TypeError, match="base"):
        DasNet("not a module", num_classes=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        DasNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 10)), num_classes=10)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        dasnet(base=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="in_chans"):
        dasnet(base=base, in_chans=3)
    with pytest.raises(TypeError, match="base"):
        dasnet(base=3)  # type: ignore[arg-type]
    net = DasNet(base, num_classes=10, passes=2, population=4)
    x, y = _data(4)
    with pytest.raises(ValueError, match="x"):
        net(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="y must have 4"):
        net.train_step(x, y[:3])
    with pytest.raises(ValueError, match="theta"):
        net.population_logits(x, torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"base must return logits \(4, 7\)"):
        DasNet(base, num_classes=7, passes=2)(x)


def test_viz_writes_gain_and_changed_prediction_pngs(tmp_path):
    from visattn.viz.gains import changed_predictions, dasnet_report

    net = DasNet(_base(), num_classes=10, passes=3)
    x, y = _data(8)
    net.calibrate(x)
    net.search.mu.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))  # a policy that changes things
    net.train()
    rep = dasnet_report(net, x, y, tmp_path, images=3)
    assert net.training  # mode restored
    pred = net.forward_passes(x)["logits"].argmax(-1)
    ch = changed_predictions(pred, y)
    assert rep["changed"] == int((pred[0] != pred[-1]).sum()) == ch["changed"].numel()
    assert rep["fixed"] + rep["broken"] <= rep["changed"]
    for key in ("gains_png", "changed_png"):
        data = rep[key].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with pytest.raises(TypeError, match="model"):
        dasnet_report(_base(), x, y, tmp_path)
    with pytest.raises(ValueError, match="y must have"):
        changed_predictions(pred, y[:3])


def test_engine_trains_and_resumes_a_dasnet_exactly(tmp_path, fmnist_small):
    """The engine's ``uses_optimizer = False`` path: SNES state lives in the checkpoint."""
    from visattn.train import TrainConfig, Trainer, safe_load

    base_path = tmp_path / "base.pt"
    torch.manual_seed(0)
    torch.save(MnistCNN().eval().state_dict(), base_path)
    before = safe_load(base_path)

    def cfg(out: str, **kw) -> TrainConfig:
        return TrainConfig(
            model="dasnet",
            model_kwargs={"base": str(base_path), "passes": 2, "population": 4, "sigma0": 0.1},
            data="npz",
            data_dir=str(fmnist_small),
            epochs=3,
            batch_size=16,
            limit_train=32,
            augment="none",
            out=str(tmp_path / out),
            progress=False,
            seed=1,
            deterministic=True,
            **kw,
        )

    Trainer(cfg("a")).run()
    Trainer(cfg("b")).run(stop_after=1)
    resumed = Trainer(cfg("b", resume=True))
    assert resumed.start_epoch == 1
    summary = resumed.run()
    a, b = safe_load(tmp_path / "a" / "last.pt"), safe_load(tmp_path / "b" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    assert int(a["model"]["search.iteration"]) == 6  # 3 epochs x 2 batches
    assert not torch.equal(a["model"]["search.mu"], torch.zeros_like(a["model"]["search.mu"]))
    for k, v in before.items():  # the base CNN's weights and BatchNorm statistics did not move
        assert torch.equal(a["model"][f"base.{k}"], v), k
    assert "test_top1" in summary and [h["epoch"] for h in b["history"]] == [1, 2, 3]
