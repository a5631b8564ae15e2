"""The Recurrent Attention Model: gradient paths, episodes, evaluation, and the engine contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visattn.learning.reinforce import baseline_loss, classification_reward, reinforce_loss
from visattn.models.ram import RecurrentAttention
from visattn.train import TrainConfig, fit

SMALL = dict(num_glimpses=3, glimpse_hidden=16, location_hidden=8, hidden_size=32)


def _images(b: int = 4, size: tuple[int, int] = (28, 32), seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, *size, generator=torch.Generator().manual_seed(seed))


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _touched(grads: dict[str, torch.Tensor | None], prefix: str) -> bool:
    return any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(prefix))


@pytest.mark.parametrize("core", ["rnn", "lstm"])
@pytest.mark.parametrize("reinforce_core", [False, True])
def test_every_parameter_gets_a_gradient_from_the_hybrid_loss(core, reinforce_core):
    torch.manual_seed(0)
    model = RecurrentAttention(core=core, reinforce_core=reinforce_core, num_scales=2, **SMALL).train()
    y = torch.tensor([0, 1, 2, 3])
    out = model(_images())
    loss = F.cross_entropy(out["logits"], y) + sum(model.extra_losses(out, y).values())
    grads = _grads(model, loss)
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("reinforce_core", [False, True])
def test_the_classification_loss_gives_the_location_net_no_gradient(reinforce_core):
    torch.manual_seed(0)
    model = RecurrentAttention(reinforce_core=reinforce_core, **SMALL).train()
    out = model(_images())
    grads = _grads(model, F.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3])))
    assert grads["location_net.weight"] is None and grads["location_net.bias"] is None
    assert grads["baseline_net.weight"] is None
    assert _touched(grads, "core") and _touched(grads, "glimpse_net") and _touched(grads, "action_net")


def test_each_extra_loss_reaches_only_its_own_parts():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 3])
    model = RecurrentAttention(**SMALL).train()
    out = model(_images())
    losses = model.extra_losses(out, y)
    g = _grads(model, losses["reinforce"])
    assert _touched(g, "location_net")
    assert not any(_touched(g, p) for p in ("core", "glimpse_net", "action_net", "baseline_net"))
    out = model(_images())
    g = _grads(model, model.extra_losses(out, y)["baseline"])
    assert _touched(g, "baseline_net")
    assert not any(_touched(g, p) for p in ("core", "glimpse_net", "action_net", "location_net"))
    # with reinforce_core the policy gradient also trains the core and glimpse networks
    model = RecurrentAttention(reinforce_core=True, **SMALL).train()
    out = model(_images())
    g = _grads(model, model.extra_losses(out, y)["reinforce"])
    assert _touched(g, "location_net") and _touched(g, "core") and _touched(g, "glimpse_net")
    assert not _touched(g, "action_net") and not _touched(g, "baseline_net")


def test_extra_losses_are_the_weighted_helpers():
    torch.manual_seed(0)
    model = RecurrentAttention(reinforce_weight=0.5, baseline_weight=3.0, **SMALL).train()
    y = torch.tensor([0, 1, 2, 3])
    out = model(_images())
    reward = classification_reward(out["logits"], y)
    losses = model.extra_losses(out, y)
    torch.testing.assert_close(
        losses["reinforce"], 0.5 * reinforce_loss(out["log_probs"], reward, out["baselines"])
    )
    torch.testing.assert_close(losses["baseline"], 3.0 * baseline_loss(out["baselines"], reward))


def test_reinforce_through_the_location_net_moves_the_glimpse_toward_the_reward():
    """Toy task: the reward is 1 when the glimpse lands in the right half (x > 0.2), whatever the image."""
    torch.manual_seed(0)
    model = RecurrentAttention(location_std=0.2, **{**SMALL, "num_glimpses": 1}).train()
    opt = torch.optim.SGD(
        list(model.location_net.parameters()) + list(model.baseline_net.parameters()), lr=0.5
    )
    x = _images(64)
    start = model(x)["means"][:, 0, 0].mean().item()
    for _ in range(30):
        out = model(x)
        reward = (out["locations"][:, 0, 0] > 0.2).float()
        loss = reinforce_loss(out["log_probs"], reward, out["baselines"]) + baseline_loss(
            out["baselines"], reward
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = model(x)["means"][:, 0, 0].mean().item()
    assert end > start + 0.3, (start, end)


def test_a_full_episode_is_deterministic_with_a_fixed_seed_and_has_the_documented_shapes():
    model = RecurrentAttention(num_classes=5, patch_size=4, num_scales=3, **SMALL).train()
    x = _images(3, (20, 24))
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    b = model(x)
    for k in ("logits", "log_probs", "baselines", "locations", "means"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert a["logits"].shape == (3, 5)
    assert a["log_probs"].shape == a["baselines"].shape == (3, 3)
    assert a["locations"].shape == a["means"].shape == (3, 3, 2)
    assert a["locations"].abs().max() <= 1.0 and a["means"].abs().max() < 1.0
    torch.manual_seed(8)
    assert not torch.equal(model(x)["locations"], a["locations"])


def test_eval_uses_the_policy_means_and_mc_averaging_is_seeded():
    torch.manual_seed(0)
    model = RecurrentAttention(**SMALL).eval()
    x = _images()
    with torch.no_grad():
        det = model(x)
        model.mc_samples = 8
        state = torch.get_rng_state()
        mc1, mc2 = model(x), model(x)
        assert torch.equal(torch.get_rng_state(), state), "MC evaluation must not draw from the global RNG"
    torch.testing.assert_close(mc1["logits"], mc2["logits"], rtol=0, atol=0)
    assert mc1["locations"].shape == (8, 4, 3, 2)
    assert not torch.equal(mc1["locations"][0], mc1["locations"][1])
    torch.testing.assert_close(mc1["logits"].exp().sum(1), torch.ones(4))
    assert det["locations"].shape == (4, 3, 2)
    # with a tiny policy std every sampled trajectory is the mean one
    tiny = RecurrentAttention(location_std=1e-6, mc_samples=4, **SMALL).eval()
    tiny.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(tiny(x)["logits"], det["logits"].log_softmax(1), atol=1e-4, rtol=1e-4)


def test_locations_pass_through_the_location_tap():
    model = RecurrentAttention(**SMALL).eval()
    seen: list[torch.Tensor] = []
    handle = model.sensor.tap.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = model(_images())
    handle.remove()
    assert model.sensor.tap.kind == "location" and len(seen) == 3
    torch.testing.assert_close(torch.stack(seen, 1), out["locations"])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="core"):
        RecurrentAttention(core="gru")
    with pytest.raises(ValueError, match="location_std"):
        RecurrentAttention(location_std=0.0)
    with pytest.raises(ValueError, match="num_glimpses"):
        RecurrentAttention(num_glimpses=0)
    with pytest.raises(TypeError, match="reinforce_core"):
        RecurrentAttention(reinforce_core=1)
    model = RecurrentAttention(**SMALL)
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="log_probs"):
        model.extra_losses(model.eval()(torch.rand(2, 1, 28, 28)), torch.tensor([0, 1]))


def test_glimpse_sensor_follows_the_sensor_contract():
    from visattn.attention import create_sensor

    sensor = create_sensor("glimpse", 3, size=4, num_scales=2)
    out = sensor(torch.rand(2, 3, 16, 20), torch.zeros(2, 2))
    assert out.shape == (2, 2, 3, 4, 4) and sensor.num_features == 96
    with pytest.raises(ValueError, match="channels"):
        sensor(torch.rand(2, 1, 16, 20), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="padding_mode"):
        create_sensor("glimpse", 3, padding_mode="wrap")


def test_ram_trains_through_the_engine_with_its_extra_losses(tmp_path, fmnist_small):
    cfg = TrainConfig(
        model="ram",
        model_kwargs=dict(SMALL),
        data="npz",
        data_dir=str(fmnist_small),
        epochs=1,
        batch_size=32,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.0,
        out=str(tmp_path / "run"),
        progress=False,
        limit_train=128,
        augment="none",
        seed=0,
    )
    summary = fit(cfg)
    text = str(summary)
    assert "reinforce" in text and "baseline" in text, text[:500]


def test_glimpse_pictures_are_written(tmp_path):
    from PIL import Image

    from visattn.viz.glimpses import glimpse_episode, plot_glimpses, save_glimpse_gif

    model = RecurrentAttention(num_scales=2, **SMALL).train()
    x = _images(3, (30, 30))
    ep = glimpse_episode(model, x)
    assert model.training, "the model's mode is restored"
    assert ep["patches"].shape == (3, 3, 2, 1, 8, 8)
    png = plot_glimpses(model, x, tmp_path / "g.png", labels=torch.tensor([1, 2, 3]), max_images=2)
    assert Image.open(png).format == "PNG"
    gif = Image.open(save_glimpse_gif(model, x[0], tmp_path / "g.gif"))
    assert gif.format == "GIF" and gif.n_frames == 3
    with pytest.raises(ValueError, match="sensor"):
        glimpse_episode(torch.nn.Linear(2, 2), x)
