"""Property-based tests: over module options and input shapes, nothing crashes except with the
documented errors.

For every registered attention module (and a set of small models), hypothesis draws constructor
options (valid and invalid) and input shapes (including 1x1, odd sizes and wrong channel counts).
Construction either succeeds or raises ``ValueError``/``TypeError``; ``forward`` either returns a
finite output with the input's batch size or raises ``ValueError``/``TypeError`` naming ``x``. A
``RuntimeError`` from deep inside a convolution, an ``IndexError`` or an ``AssertionError`` is a
failure: it means a check is missing.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import visattn
from conftest import create_module, module_class
from visattn.attention import list_sensors
from visattn.train.engine import logits_of

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def mostly(valid, anything):
    """Draw from ``valid`` most of the time and from ``anything`` (invalid values too) otherwise."""
    return st.one_of(valid, valid, valid, anything)


small_int = mostly(st.integers(1, 2), st.integers(-2, 4))
# per mechanism: a strategy of keyword options; unknown (newly landed) mechanisms get the
# identity_init switch when they support it, and their defaults otherwise
OPTIONS: dict[str, Any] = {
    "se": st.fixed_dictionaries(
        {},
        optional={
            "reduction": st.integers(-1, 40),
            "pool": mostly(st.sampled_from(["avg", "max"]), st.just("median")),
            "gate": mostly(st.sampled_from(["sigmoid", "tanh", "relu"]), st.just("softmax")),
            "identity_init": st.booleans(),
        },
    ),
    "residual": st.fixed_dictionaries(
        {},
        optional={
            "p": small_int,
            "t": small_int,
            "r": small_int,
            "skip_levels": mostly(st.integers(0, 2), st.integers(-1, 3)),
            "mask": mostly(st.sampled_from(["mixed", "channel", "spatial"]), st.just("global")),
            "residual": st.booleans(),
            "identity_init": st.booleans(),
        },
    ),
    "spatial_transformer": st.fixed_dictionaries(
        {},
        optional={
            "transform": mostly(
                st.sampled_from(["affine", "attention", "projective", "tps"]), st.just("nope")
            ),
            "out_size": st.one_of(
                st.none(), st.integers(-1, 20), st.tuples(st.integers(1, 20), st.integers(1, 20))
            ),
            "grid_size": st.one_of(st.integers(-1, 5), st.tuples(st.integers(1, 5), st.integers(1, 5))),
            "padding_mode": st.sampled_from(["zeros", "border", "reflection", "wrap"]),
            "identity_init": st.booleans(),
            "align_corners": st.booleans(),
        },
    ),
    "glimpse": st.fixed_dictionaries(
        {},
        optional={
            "size": st.integers(-1, 12),
            "num_scales": st.integers(-1, 4),
            "scale_factor": st.integers(-1, 3),
            "padding_mode": st.sampled_from(["zeros", "border", "reflection", "wrap"]),
        },
    ),
}


def _default_options(name: str):
    cls = module_class(name)
    if getattr(cls, "supports_identity_init", False):
        return st.fixed_dictionaries({}, optional={"identity_init": st.booleans()})
    return st.just({})


def _forward_args(name: str, b: int) -> tuple:
    """Inputs after ``x`` for forwards that take more (see test_bad_input.EXTRA_INPUTS)."""
    extra = [
        p
        for p in list(inspect.signature(module_class(name).forward).parameters.values())[2:]
        if p.default is inspect.Parameter.empty
    ]
    if name == "glimpse":
        return (torch.rand(b, 2) * 2 - 1,)
    assert not extra, f"{name}: forward needs {[p.name for p in extra]}; add an input maker here"
    return ()


shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 24),  # C of the module
    st.sampled_from([0, 0, 0, -1, 1]),  # channel offset of the input: -1/+1 are wrong on purpose
    mostly(st.integers(8, 24), st.integers(1, 24)),  # H
    mostly(st.integers(8, 24), st.integers(1, 24)),  # W
)


@pytest.mark.parametrize("name", visattn.list_attention() + list_sensors())
def test_attention_modules_fail_only_with_documented_errors(name):
    options = OPTIONS[name] if name in OPTIONS else _default_options(name)
    ran = [0]

    @SETTINGS
    @given(opts=options, shape=shapes)
    def check(opts: dict[str, Any], shape: tuple[int, int, int, int, int]) -> None:
        b, c, dc, h, w = shape
        try:
            m = create_module(name, c, **opts)
        except DOCUMENTED:
            return
        x = torch.randn(b, max(1, c + dc), h, w)
        try:
            with torch.no_grad():
                y = m(x, *_forward_args(name, b))
        except DOCUMENTED as e:
            assert "x" in str(e) or any(k in str(e) for k in opts), f"{name}{opts}: unhelpful error {e}"
            return
        assert dc == 0 or x.shape[1] == c, f"{name}{opts}: accepted {x.shape[1]} channels, built for {c}"
        out = y if isinstance(y, torch.Tensor) else logits_of(y)
        assert out.shape[0] == b, f"{name}{opts}: batch {b} -> output {tuple(out.shape)}"
        assert torch.isfinite(out).all(), (
            f"{name}{opts}: non-finite output for a finite input {tuple(x.shape)}"
        )
        ran[0] += 1

    check()
    assert ran[0] >= 2, f"{name}: only {ran[0]} examples got through forward; the strategy is too wild"


SMALL_MODELS = [
    n
    for n in ("mnist_cnn", "resnet20", "se_resnet20", "cnn_mnist", "attention56_cifar")
    if n in visattn.list_models()
]


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_fail_only_with_documented_errors(name):
    ran = [0]

    @settings(max_examples=16, deadline=None, derandomize=True)
    @given(
        num_classes=st.integers(-1, 12),
        in_chans=st.integers(0, 4),
        b=st.integers(1, 2),
        dc=st.sampled_from([0, 0, 0, -1, 1]),
        valid_size=st.booleans(),
        hw=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    )
    def check(
        num_classes: int, in_chans: int, b: int, dc: int, valid_size: bool, hw: tuple[int, int]
    ) -> None:
        try:
            m = visattn.create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
        except DOCUMENTED:
            assert num_classes < 1 or in_chans < 1, (
                f"{name} refused num_classes={num_classes} in_chans={in_chans}"
            )
            return
        h, w = hw
        if valid_size:  # a size the spec allows, near its smallest
            spec = m.input_spec
            h, w = spec.size or (spec.min_size[0] + h % 9, spec.min_size[1] + w % 9)
        x = torch.randn(b, max(1, in_chans + dc), h, w)
        try:
            with torch.no_grad():
                out = logits_of(m(x))
        except DOCUMENTED as e:
            assert "x" in str(e), f"{name}: error does not name x: {e}"
            return
        assert x.shape[1] == in_chans, f"{name}: accepted {x.shape[1]} channels, built for {in_chans}"
        assert out.shape == (b, num_classes)
        assert torch.isfinite(out).all()
        ran[0] += 1

    check()
    assert ran[0] >= 1, f"{name}: no example got through forward"
