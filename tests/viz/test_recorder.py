"""AttentionRecorder: finds every tap, records the documented shapes, leaves no hooks behind."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import visattn
from visattn.attention import get_attention_class
from visattn.attention._tap import TAP_KINDS, AttentionTap
from visattn.viz.recorder import AttentionRecorder, find_taps, record_attention

STEPS = 3


class AllKinds(nn.Module):
    """A toy model emitting one tap of every kind; the location tap fires STEPS times."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.mask = AttentionTap("spatial")
        self.gate = AttentionTap("channel")
        self.warp = AttentionTap("warp")
        self.where = AttentionTap("location")
        self.gains = AttentionTap("gains")
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        f = f * self.mask(torch.sigmoid(f.mean(1, keepdim=True)))
        g = self.gate(torch.sigmoid(f.mean((2, 3))))
        f = f * g[:, :, None, None]
        theta = torch.eye(2, 3).expand(x.shape[0], 2, 3) * 0.5
        grid = self.warp(F.affine_grid(theta, [x.shape[0], 1, 6, 7], align_corners=False))
        f = F.grid_sample(f, grid, align_corners=False)
        for t in range(STEPS):
            self.where(torch.full((x.shape[0], 2), 0.1 * t))
        pooled = f.mean((2, 3))
        return self.head(pooled * self.gains(torch.ones_like(pooled)))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _check_shape(kind: str, t: torch.Tensor, batch: int) -> None:
    assert t.shape[0] == batch
    if kind == "spatial":
        assert t.ndim == 4
    elif kind in ("channel", "gains"):
        assert t.ndim == 2
    elif kind == "warp":
        assert t.ndim == 4 and t.shape[-1] == 2
    else:
        assert kind == "location" and t.shape == (batch, 2)


def test_records_every_kind_with_its_shape_and_removes_hooks():
    net = AllKinds()
    before = _hooks(net)
    x = torch.rand(3, 1, 8, 8)
    with AttentionRecorder(net) as rec:
        assert rec.active and _hooks(net) == before + len(TAP_KINDS)
        out = net(x)
    assert _hooks(net) == before and not rec.active
    assert out.shape == (3, 5)
    got = {n: (r.kind, tuple(r.value.shape)) for n, r in rec.records.items()}
    assert got == {
        "mask": ("spatial", (3, 1, 8, 8)),
        "gate": ("channel", (3, 4)),
        "warp": ("warp", (3, 6, 7, 2)),
        "where": ("location", (3, 2)),
        "gains": ("gains", (3, 4)),
    }
    loc = rec.records["where"]
    assert len(loc.calls) == STEPS and loc.stacked().shape == (3, STEPS, 2)
    assert torch.allclose(loc.stacked()[:, :, 0], torch.tensor([0.0, 0.1, 0.2]).expand(3, -1))
    # recorded values are the tensors the taps passed (detached copies)
    assert not rec.records["mask"].value.requires_grad
    ref = torch.sigmoid(net.conv(x).mean(1, keepdim=True))
    assert torch.allclose(rec.records["mask"].value, ref)


def test_hooks_removed_when_the_forward_raises_and_kinds_filter():
    net = AllKinds()
    with pytest.raises(RuntimeError), AttentionRecorder(net):
        net(torch.rand(2, 3, 8, 8))  # wrong channel count: conv raises
    assert _hooks(net) == 0
    with AttentionRecorder(net, kinds=["channel", "location"]) as rec:
        net(torch.rand(2, 1, 8, 8))
    assert set(rec.records) == {"gate", "where"}
    assert _hooks(net) == 0
    with pytest.raises(ValueError, match="kinds"):
        AttentionRecorder(net, kinds=["mask"])
    with pytest.raises(TypeError, match="model"):
        AttentionRecorder("net")  # type: ignore[arg-type]


def test_clear_between_passes_and_record_attention_helper():
    net = AllKinds()
    rec = AttentionRecorder(net)
    with rec:
        net(torch.rand(2, 1, 8, 8))
        rec.clear()
        net(torch.rand(4, 1, 8, 8))
    assert len(rec.records["mask"].calls) == 1 and rec.records["mask"].value.shape[0] == 4
    out, recs = record_attention(net, torch.rand(2, 1, 8, 8), kinds=["gains"])
    assert out.shape == (2, 5) and list(recs) == ["gains"] and _hooks(net) == 0
    with pytest.raises(ValueError, match="did not fire"):
        AttentionRecorder(net).records["mask"].value  # noqa: B018


def test_retrofitted_torchvision_resnet():
    net = torchvision.models.resnet18(num_classes=10).eval()
    net = visattn.retrofit(net, "se", reduction=8)
    taps = find_taps(net)
    assert len(taps) == 8 and all(t.kind == "channel" for t in taps.values())
    with AttentionRecorder(net) as rec:
        net(torch.rand(2, 3, 32, 32))
    assert _hooks(net) == 0
    widths = {n: r.value.shape for n, r in rec.records.items()}
    assert widths["layer1.0.bn2.attn.tap"] == (2, 64) and widths["layer4.1.bn2.attn.tap"] == (2, 512)


_MODEL_KWARGS = {"dasnet": lambda: {"base": visattn.create_model("mnist_cnn", num_classes=7)}}


def _input(model: nn.Module) -> torch.Tensor:
    spec = model.input_spec
    h, w = spec.size if spec.size is not None else (max(spec.min_size[0], 28), max(spec.min_size[1], 28))
    return torch.randn(2, spec.in_chans, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", visattn.list_models())
def test_every_registered_model(name):
    torch.manual_seed(0)
    model = visattn.create_model(name, num_classes=7, **_MODEL_KWARGS.get(name, lambda: {})()).eval()
    taps = find_taps(model)
    before = _hooks(model)
    with AttentionRecorder(model) as rec:
        model(_input(model))
    assert _hooks(model) == before
    assert set(rec.records) == set(taps)
    # every registered attention module inside the model has a recorded tap
    classes = tuple(get_attention_class(a) for a in visattn.list_attention())
    for mod_name, mod in model.named_modules():
        if isinstance(mod, classes):
            prefix = f"{mod_name}." if mod_name else ""
            assert any(n.startswith(prefix) for n in rec.records), f"{mod_name} has no recorded tap"
    for name_, r in rec.records.items():
        assert r.calls, f"tap {name_} did not fire"
        for t in r.calls:
            _check_shape(r.kind, t, 2)


class _Writer:
    def __init__(self) -> None:
        self.images: dict[str, tuple] = {}

    def add_image(self, tag, img, step, dataformats="CHW"):
        self.images[tag] = (img.shape, img.dtype, step, dataformats)


def test_tensorboard_attention_images(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from visattn.viz.tensorboard import AttentionImageLogger

    torch.manual_seed(0)
    net = AllKinds().train()
    logger = AttentionImageLogger(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]), every=5, show=3)
    fake = _Writer()
    assert logger.maybe_log(fake, net, 4) == [] and fake.images == {}
    rng = torch.get_rng_state()
    tags = logger.maybe_log(fake, net, 10)
    assert torch.equal(rng, torch.get_rng_state())  # the training random stream is untouched
    assert net.training and _hooks(net) == 0
    assert (
        set(tags)
        == set(fake.images)
        >= {
            "attention/where it looks",
            "attention/glimpse path: where",
            "attention/filter gains: gains",
            "attention/channel weights",
        }
    )
    for shape, dtype, step, fmt in fake.images.values():
        assert len(shape) == 3 and shape[2] == 3 and shape[0] > 50 and str(dtype) == "uint8"
        assert step == 10 and fmt == "HWC"
    with SummaryWriter(str(tmp_path / "tb")) as writer:
        logger.maybe_log(writer, net, 5)
    assert any(f.stat().st_size > 1000 for f in (tmp_path / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="every"):
        AttentionImageLogger(torch.rand(2, 1, 8, 8), every=0)
