"""dasNet: a trained CNN steered by feedback attention on its filters (Stollenga, Masci, Gomez,
Schmidhuber, "Deep Networks with Internal Selective Attention through Feedback Connections", NIPS 2014).

The wrapped CNN (the *base*) is frozen and never changed. An image is classified in ``T`` passes:

1. pass 1 runs the base with every gain ``a = 1`` (exactly the base's output);
2. after pass ``t`` the observation ``o_t (B, D)`` is read: the spatial mean of every steered filter's
   (gained) output map, ``F`` numbers in all, and the class probabilities ``softmax(logits_t)``,
   ``K`` numbers, so ``D = F + K``; it is standardised, ``o' = (o - m) / s``, with a mean ``m`` and
   std ``s`` per entry measured once on the first training batch (buffers ``obs_mean``/``obs_std``);
3. the policy, linear as in the paper, sets the gains of pass ``t + 1``:
   ``a_{t+1} = 2 sigmoid(W o'_t + b)`` in ``(0, 2)``, ``W (F, D)``, ``b (F,)``; the flat parameter
   vector ``theta = [vec(W), b]`` has ``d = F D + F`` numbers;
4. the final pass's logits are the prediction.

Gains multiply the output maps of the steered layers (default: every ``nn.Conv2d``, found by name)
through :class:`visattn.attention.FilterGains` modules called from forward hooks that exist only
during a call of this module, so the base module, its forward and its ``state_dict`` keys are untouched.
At ``theta = 0`` every gain is ``2 sigmoid(0) = 1`` exactly, so the search starts at the base CNN.

Training (``uses_optimizer = False``; the engine calls :meth:`DasNet.train_step` per batch): one SNES
iteration (``visattn.learning.snes``) per batch over ``theta``; the fitness of a candidate is the mean
log-probability of the correct class after the last pass over the batch's ``n`` images
(``fitness="log_prob"``, smooth, so ranks differ even when accuracy ties) or its accuracy
(``fitness="accuracy"``). All ``p`` candidates are evaluated in one batched call, sharing what does not
depend on the policy:

* pass 1 (all gains 1) runs once on the ``n`` images and is broadcast to the ``p`` candidates;
* the pre-gain output of the first steered layer (first in execution order) is the same in every pass
  and for every candidate: pass 1 caches it, and in passes ``2..T`` that layer's forward is replaced by
  the cache (layers *before* it still run: a generic wrapper cannot cut the base's graph), its gains
  broadcasting the ``n`` cached maps to the ``p n`` stacked images (:class:`FilterGains`). The cache is
  used only if that layer fired exactly once in pass 1 (nothing before its call depends on gains);
* with ``channels_last=True`` the cache is stored in ``torch.channels_last`` memory format, so the
  gain-dependent rest of passes ``2..T`` runs channels-last (on one CPU thread max-pooling is ~10x and
  the whole ``mnist_cnn`` suffix ~2.7x faster than in ``NCHW``); pass 1 is the base's own forward.

Results equal the unshared computation within float tolerance (``channels_last=False``: the base
bit for bit at gains 1 for one candidate). One candidate alone (``P = 1``) goes through the same
code, so it shares pass 1 and the prefix between its own passes only. The base stays in ``eval()`` mode (BatchNorm uses its running
statistics), so each image's output does not depend on the others in its batch; the base must be
deterministic in ``eval()`` mode. ``eval()``/``forward`` use the search mean ``mu`` as ``theta``. Under
``torch.distributed`` every process draws the same candidates (same seed) and the fitness is averaged
over processes, so the search stays identical on all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from visattn._dist import all_reduce_mean
from visattn._validate import check_choice, check_positive, check_tensor, check_type
from visattn.attention.feedback import FilterGains
from visattn.learning.snes import SNES
from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._load import load_model
from visattn.models._registry import register_model

__all__ = ["DasNet", "dasnet", "FITNESSES"]

FITNESSES = ("log_prob", "accuracy")


def _channels_of(module: nn.Module) -> int | None:
    for attr in ("out_channels", "num_features"):
        c = getattr(module, attr, None)
        if isinstance(c, int):
            return c
    return None


class _Prefix(NamedTuple):
    """The pre-gain output ``(n, C, H, W)`` of the steered layer ``steer[layer]`` that fires first."""

    layer: int
    output: torch.Tensor


class DasNet(nn.Module):
    """Feedback attention over a frozen CNN; ``(B, C, H, W) -> (B, num_classes)`` logits.

    Args:
        base: the trained CNN; its parameters are frozen (``requires_grad=False``) and never changed.
        num_classes: ``K``, the number of logits the base returns.
        passes: ``T >= 1`` passes per image (``T = 1`` is the base alone).
        steer: names (as in ``base.named_modules()``) of the layers whose output maps get gains;
            each needs ``out_channels`` or ``num_features``. Default: every ``nn.Conv2d``.
        population, mirrored, sigma0, eta_mu, eta_sigma, seed: the SNES search (``visattn.train.SNES``);
            ``sigma0`` is the initial std of every policy parameter around ``theta = 0``.
        fitness: ``"log_prob"`` (mean log-probability of the correct class) or ``"accuracy"``.
        max_images: the most images in one forward of the base; the stacked population is split
            into chunks of whole candidates (64 was fastest for ``mnist_cnn`` on one CPU thread with
            ``n = 32`` or ``64``; 256 was 1.7x slower: its feature maps spill out of the cache).
        channels_last: run passes ``2..T`` from a ``channels_last`` copy of the cached prefix.

    >>> from visattn.models.mnist_cnn import MnistCNN
    >>> net = DasNet(MnistCNN().eval(), num_classes=10, passes=2, population=4)
    >>> net(torch.randn(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    >>> net.policy_dim, net.search.population
    (10272, 4)
    """

    uses_optimizer = False
    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    calibrated: torch.Tensor

    def __init__(
        self,
        base: nn.Module,
        *,
        num_classes: int,
        passes: int = 3,
        steer: Sequence[str] | None = None,
        population: int | None = None,
        mirrored: bool = True,
        sigma0: float = 0.05,
        eta_mu: float | None = None,
        eta_sigma: float | None = None,
        fitness: str = "log_prob",
        seed: int = 0,
        max_images: int = 64,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        check_type(base, "base", nn.Module)
        check_positive(num_classes, "num_classes", integer=True)
        check_positive(passes, "passes", integer=True)
        check_choice(fitness, "fitness", FITNESSES)
        check_positive(max_images, "max_images", integer=True)
        check_type(channels_last, "channels_last", bool)
        modules = dict(base.named_modules())
        if steer is None:
            steer = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            if not steer:
                raise ValueError("base has no nn.Conv2d layers to steer; pass steer=[...] names")
        if isinstance(steer, str) or not isinstance(steer, Sequence) or not steer:
            raise TypeError(f"steer must be a non-empty list of layer names, got {steer!r}")
        channels = []
        for name in steer:
            if name not in modules or name == "":
                raise ValueError(
                    f"steer: base has no layer {name!r}; layers: {[n for n in modules if n][:20]}"
                )
            c = _channels_of(modules[name])
            if c is None:
                raise ValueError(
                    f"steer: layer {name!r} ({type(modules[name]).__name__}) has no out_channels/num_features"
                )
            channels.append(c)
        if len(set(steer)) != len(steer):
            raise ValueError(f"steer names must be unique, got {list(steer)}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()
        spec = getattr(base, "input_spec", None)
        if not isinstance(spec, InputSpec):
            first = next((m for m in base.modules() if isinstance(m, nn.Conv2d)), None)
            spec = InputSpec(first.in_channels if first is not None else 3)
        self.input_spec = spec
        self.num_classes, self.passes, self.fitness = num_classes, passes, fitness
        self.max_images, self.channels_last = max_images, channels_last
        self.steer = list(steer)
        self.filter_counts = channels
        self.gains = nn.ModuleList(FilterGains(c) for c in channels)
        for p in self.gains.parameters():
            p.requires_grad_(False)
        self.num_filters = sum(channels)
        self.obs_dim = self.num_filters + num_classes
        self.policy_dim = self.num_filters * self.obs_dim + self.num_filters
        self.search = SNES(
            self.policy_dim,
            sigma0=sigma0,
            population=population,
            mirrored=mirrored,
            eta_mu=eta_mu,
            eta_sigma=eta_sigma,
            seed=seed,
        )
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True) -> DasNet:
        """Set the mode of the wrapper; the base always stays in ``eval()`` (frozen BatchNorm statistics)."""
        super().train(mode)
        self.base.eval()
        return self

    # ------------------------------------------------------------------ passes
    def _gain_module(self, i: int) -> FilterGains:
        fg = self.gains[i]
        assert isinstance(fg, FilterGains)  # internal invariant, not a user error
        return fg

    def _run(
        self, x: torch.Tensor, gains: torch.Tensor | None, prefix: _Prefix | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, _Prefix | None]:
        """One pass of the base with gains ``(B, F)`` (``None``: all ones): logits ``(B, K)``, obs ``(B, D)``.

        Without ``prefix`` the base runs in full and the pre-gain output of the first steered layer to
        fire is returned as the prefix of ``x`` (``None`` if that layer fired more than once: a later
        call may see gained inputs). With ``prefix`` (from a full run on ``n`` images, ``x``
        then holds ``R`` copies of them, ``B = R n``) that layer's forward is replaced by the cached
        output: it is not recomputed, and its gains broadcast the ``n`` cached maps to ``R n``.
        """
        feats: list[torch.Tensor | None] = [None] * len(self.steer)
        fired: list[int] = []
        captured: list[torch.Tensor] = []
        parts = gains.split(self.filter_counts, dim=1) if gains is not None else [None] * len(self.steer)
        modules = dict(self.base.named_modules())
        handles = []

        def make_hook(i: int):
            def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
                if prefix is None and not fired:
                    captured.append(out)
                fired.append(i)
                y = self._gain_module(i)(out)
                feats[i] = y.mean(dim=(2, 3))
                return y

            return hook

        cached = modules[self.steer[prefix.layer]] if prefix is not None else None
        own_forward = cached.__dict__.get("forward") if cached is not None else None
        try:
            for i, (name, g) in enumerate(zip(self.steer, parts)):
                self._gain_module(i).set_gains(g)
                handles.append(modules[name].register_forward_hook(make_hook(i)))
            if cached is not None:  # its hooks still run: the gains broadcast the n cached maps
                kept = prefix.output if prefix is not None else None
                cached.forward = lambda *args, **kwargs: kept  # type: ignore[method-assign]
            logits = self.base(x)
        finally:
            if cached is not None:  # back to the forward it had
                if own_forward is None:
                    del cached.forward
                else:
                    cached.forward = own_forward  # type: ignore[method-assign]
            for h in handles:
                h.remove()
            for i in range(len(self.steer)):
                self._gain_module(i).set_gains(None)
        if not isinstance(logits, torch.Tensor) or logits.shape != (x.shape[0], self.num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"base must return logits ({x.shape[0]}, {self.num_classes}), got {got}")
        missing = [self.steer[i] for i, f in enumerate(feats) if f is None]
        if missing:
            raise ValueError(f"steered layers {missing} were not called by the base's forward")
        obs = torch.cat([*feats, logits.softmax(dim=1)], dim=1)  # type: ignore[list-item]
        new_prefix = None
        if prefix is None and fired.count(fired[0]) == 1:  # the first one fired once: its output is fixed
            out = captured[0]
            if self.channels_last and out.ndim == 4:
                out = out.contiguous(memory_format=torch.channels_last)
            new_prefix = _Prefix(fired[0], out)
        return logits, obs, new_prefix

    def _policy(self, theta: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Gains ``(P, n, F) = 2 sigmoid(W o' + b)`` from ``theta (P, d)`` and raw obs ``(P, n, D)``."""
        nf, nd = self.num_filters, self.obs_dim
        w = theta[:, : nf * nd].view(-1, nf, nd)
        b = theta[:, nf * nd :].view(-1, 1, nf)
        o = (obs - self.obs_mean) / self.obs_std
        return 2.0 * torch.sigmoid(torch.baddbmm(b, o, w.transpose(1, 2)))

    def _population_passes(
        self, x: torch.Tensor, theta: torch.Tensor, record: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Logits ``(P, n, K)`` of the last pass for each of ``P`` candidates, one batched pass each.

        Pass 1 (all gains 1) runs once on the ``n`` images and is broadcast to the ``P`` candidates;
        passes ``2..T`` run the ``P n`` stacked images from the cached prefix. With ``record`` also
        returns per-pass logits and gains, each ``(P, n, K)`` / ``(P, n, F)``.
        """
        n, pop = x.shape[0], theta.shape[0]
        logits1, obs1, prefix = self._run(x, None)
        logits = logits1.unsqueeze(0).expand(pop, n, self.num_classes)
        obs = obs1.unsqueeze(0).expand(pop, n, self.obs_dim)
        rec_logits = [logits] if record else []
        rec_gains = [torch.ones(pop, n, self.num_filters, device=x.device, dtype=x.dtype)] if record else []
        per_chunk = max(1, self.max_images // n)
        for _ in range(1, self.passes):
            gains = self._policy(theta.to(obs.dtype), obs)
            outs = [
                self._run(x.repeat(g.shape[0], 1, 1, 1), g.reshape(-1, self.num_filters).to(x.dtype), prefix)
                for g in gains.split(per_chunk, dim=0)
            ]
            logits = torch.cat([o[0] for o in outs]).view(pop, n, self.num_classes)
            obs = torch.cat([o[1] for o in outs]).view(pop, n, self.obs_dim)
            if record:
                rec_logits.append(logits)
                rec_gains.append(gains)
        return logits, rec_logits, rec_gains

    # --------------------------------------------------------------- interface
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last pass's logits with the policy ``theta = mu``: ``(B, C, H, W) -> (B, K)``."""
        check_input(self.input_spec, x)
        return self._population_passes(x, self.search.mu[None])[0][0]

    @torch.no_grad()
    def forward_passes(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every pass with policy ``theta (d,)`` (default ``mu``): ``logits (T, B, K)``, ``gains (T, B, F)``.

        Pass 1's gains are all ones. Column ``f`` of the gains belongs to filter ``f`` of the steered
        layers in ``self.steer`` order (``self.filter_counts`` filters each).
        """
        check_input(self.input_spec, x)
        theta = self.search.mu if theta is None else theta
        check_tensor(theta, "theta", ndim=1, layout="(d,)")
        _, logits, gains = self._population_passes(x, theta[None], record=True)
        return {"logits": torch.stack([g[0] for g in logits]), "gains": torch.stack([g[0] for g in gains])}

    @torch.no_grad()
    def population_logits(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Last-pass logits ``(P, B, K)`` of the candidate policies ``theta (P, d)``, in one batched pass."""
        check_input(self.input_spec, x)
        check_tensor(theta, "theta", ndim=2, layout="(P, d)")
        if theta.shape[1] != self.policy_dim:
            raise ValueError(f"theta must be (P, {self.policy_dim}), got {tuple(theta.shape)}")
        return self._population_passes(x, theta)[0]

    @torch.no_grad()
    def population_fitness(self, x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Fitness ``(P,)`` of candidates ``theta (P, d)`` on images ``x (n, C, H, W)``, labels ``y (n,)``."""
        check_tensor(y, "y", ndim=1, floating=False, layout="(n,)")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have {x.shape[0]} labels (one per image), got shape {tuple(y.shape)}")
        logits = self.population_logits(x, theta).float()
        if self.fitness == "accuracy":
            return (logits.argmax(-1) == y).float().mean(1)
        logp = logits.log_softmax(-1).gather(-1, y.expand(logits.shape[0], -1).unsqueeze(-1))
        return logp.squeeze(-1).mean(1)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Set ``obs_mean``/``obs_std`` from pass 1 on ``x`` (averaged over processes under DDP)."""
        check_input(self.input_spec, x)
        _, obs, _ = self._run(x, None)
        stats = all_reduce_mean(torch.stack([obs.mean(0), (obs * obs).mean(0)]).float())
        self.obs_mean.copy_(stats[0])
        self.obs_std.copy_((stats[1] - stats[0] ** 2).clamp_min(0).sqrt().clamp_min(1e-4))
        self.calibrated.fill_(True)

    @torch.no_grad()
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """One SNES iteration with the batch as the ``n`` fitness images; returns statistics (floats).

        The first call also calibrates the observation statistics on this batch.
        """
        check_input(self.input_spec, x)
        if not bool(self.calibrated):
            self.calibrate(x)
        s, theta = self.search.ask()
        fit = all_reduce_mean(self.population_fitness(x, y, theta))
        stats = self.search.tell(s, fit)
        return {"loss": -stats["fitness_mean"], **stats}

    def extra_repr(self) -> str:
        return (
            f"passes={self.passes}, steer={self.steer}, filters={self.num_filters}, "
            f"policy_dim={self.policy_dim}, fitness={self.fitness!r}"
        )


def _load_base(
    base: str | Path, base_model: str, num_classes: int, in_chans: int, base_kwargs: dict
) -> nn.Module:
    """The base of :func:`dasnet` from a weights path or a shipped ``"NAME.TAG"`` id (a file wins)."""
    from visattn.models._pretrained import list_pretrained
    from visattn.models._registry import create_model

    if not Path(base).exists() and str(base) in list_pretrained():
        name, tag = str(base).split(".", 1)
        if name != base_model:
            raise ValueError(f"base {str(base)!r} holds a {name!r}, but base_model is {base_model!r}")
        return create_model(name, pretrained=tag, num_classes=num_classes, in_chans=in_chans, **base_kwargs)
    return load_model(base_model, base, num_classes=num_classes, in_chans=in_chans, **base_kwargs)


@register_model("dasnet")
def dasnet(
    *,
    base: nn.Module | str | Path,
    base_model: str = "mnist_cnn",
    num_classes: int = 10,
    in_chans: int = 1,
    base_kwargs: dict | None = None,
    passes: int = 3,
    steer: Sequence[str] | str | None = None,
    **search: Any,
) -> DasNet:
    """dasNet over ``base``: an ``nn.Module``; a weights file (``.pt`` weights-only or ``.safetensors``)
    loaded strictly into ``create_model(base_model, num_classes=..., in_chans=..., **base_kwargs)``; or the
    id ``"NAME.TAG"`` of shipped weights (``list_pretrained()``, e.g. ``"mnist_cnn.fashion_mnist"``), loaded
    as ``create_model(NAME, pretrained=TAG)`` (``NAME`` must be ``base_model``). A shipped dasNet's card
    names its base this way, so its weights load on any machine.

    ``steer`` may be a comma-separated string of layer names. Other options (``population``,
    ``mirrored``, ``sigma0``, ``eta_mu``, ``eta_sigma``, ``fitness``, ``seed``, ``max_images``,
    ``channels_last``) go to :class:`DasNet`.
    """
    check_model_args(num_classes, in_chans)
    if isinstance(base, (str, Path)):
        check_type(base_model, "base_model", str)
        base = _load_base(base, base_model, num_classes, in_chans, base_kwargs or {})
    elif not isinstance(base, nn.Module):
        raise TypeError(f"base must be an nn.Module or a weights path, got {type(base).__name__} {base!r}")
    spec = getattr(base, "input_spec", None)
    if isinstance(spec, InputSpec) and spec.in_chans != in_chans:
        raise ValueError(f"in_chans is {in_chans} but the base takes {spec.in_chans}-channel images")
    if isinstance(steer, str):
        steer = [s.strip() for s in steer.split(",") if s.strip()]
    return DasNet(base, num_classes=num_classes, passes=passes, steer=steer, **search)
