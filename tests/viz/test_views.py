"""The view registry: mechanisms register their own pictures; ``attention_views`` runs the matching ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import visattn
from visattn.attention import AttentionTap
from visattn.viz.render import attention_views
from visattn.viz.views import View, register_view, registered_views, unregister_view


class _Pointer(nn.Module):
    """A toy mechanism: a location tap of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.tap = AttentionTap("location")

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.tap(torch.tanh(f.mean((2, 3))[:, :2]))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pointer = _Pointer()
        self.plain = AttentionTap("location")
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))
        self.pointer(f)
        self.plain(torch.zeros(x.shape[0], 2))
        return self.head(f.mean((2, 3)))


@pytest.fixture
def pointer_view():
    seen: dict[str, list[str]] = {}

    @register_view("test: pointer", kinds=("location",), owner=_Pointer, exclusive=True, order=25)
    def _view(ctx, records):
        seen["records"] = sorted(records)
        return [View("pointer", f"{len(ctx.xs)} images", b"png")]

    yield seen
    unregister_view("test: pointer")


def test_a_mechanism_registers_its_own_view_and_takes_its_records(pointer_view):
    assert "test: pointer" in registered_views()
    titles = [
        v.title for v in attention_views(_Net().eval(), torch.rand(5, 1, 8, 8), show=3, with_gradcam=False)
    ]
    assert pointer_view["records"] == ["pointer.tap"]  # only the taps its owner holds
    assert "pointer" in titles
    # exclusive: the generic glimpse path draws the other location tap only
    assert "glimpse path: plain" in titles and "glimpse path: pointer.tap" not in titles


def test_without_the_registration_the_generic_view_draws_it():
    titles = [
        v.title for v in attention_views(_Net().eval(), torch.rand(5, 1, 8, 8), show=3, with_gradcam=False)
    ]
    assert "glimpse path: pointer.tap" in titles and "pointer" not in titles


def test_mechanisms_views_come_from_their_registrations():
    torch.manual_seed(0)
    ram = visattn.create_model("ram", num_classes=10, in_chans=1)
    titles = [v.title for v in attention_views(ram, torch.rand(4, 1, 28, 28), show=2, with_gradcam=False)]
    assert "glimpses" in titles and not any(t.startswith("glimpse path") for t in titles)
    stn = visattn.create_model("st_cnn_mnist", num_classes=10, in_chans=1)
    titles = [v.title for v in attention_views(stn, torch.rand(4, 1, 28, 28), show=2, with_gradcam=False)]
    assert "warps" in titles and "where it looks" in titles


def test_registration_errors_name_the_problem():
    with pytest.raises(ValueError, match="kinds must be"):
        register_view("test: bad", kinds=("heat",))
    with pytest.raises(ValueError, match="already registered"):
        register_view("overlay", kinds=("spatial",))
