"""The Recurrent Attention Model (RAM): hard visual attention trained by REINFORCE.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014 (sec. 3-4).

At each of ``T`` steps the model looks at a small multi-scale glimpse of the image and decides
where to look next; after the last glimpse it classifies. Parts (paper's names, our attributes):

* glimpse sensor ``rho(x, l)`` (``sensor``, ``visattn.attention.GlimpseSensor``): ``k`` patches of
  sides ``g, 2g, ...`` at ``l``, each resized to ``g x g``;
* glimpse network ``f_g`` (``glimpse_net``): ``h_g = relu(W_g rho)``, ``h_l = relu(W_l l)``,
  ``g_t = relu(W_hg h_g + W_hl h_l)`` (128, 128, 256 units);
* core network ``f_h`` (``core``): ``h_t = relu(W_hh h_{t-1} + W_gh g_t)`` (256 units, ``core="rnn"``,
  the paper's classification network) or an ``LSTMCell`` (``core="lstm"``);
* location network ``f_l`` (``location_net``): the mean ``mu_t = tanh(W_l h_{t-1})`` of a Gaussian
  policy ``l_t ~ N(mu_t, sigma^2 I)`` with fixed ``sigma = location_std`` (the tanh keeps the mean in
  the image; the paper's ``f_l`` is linear); the sample is clamped to ``[-1, 1]`` before the glimpse
  (the clamp is part of the environment, the log-probability is that of the unclamped sample);
* action network ``f_a`` (``action_net``): logits ``W_a h_T`` after the last glimpse;
* baseline ``b_t = W_b h_{t-1}`` (``baseline_net``), a learned estimate of the expected reward.

The first location ``l_1`` is drawn from the policy at ``h_0 = 0``, so it is a learned location (the
location net's bias) and, like every later one, carries a log-probability: ``T`` glimpses, ``T``
decisions, ``log_probs`` and ``baselines`` of shape ``(B, T)``.

Hybrid loss (sec. 3.2): ``CE(logits, y)`` for glimpse, core and action networks (the engine adds it),
plus ``extra_losses``: ``reinforce = reinforce_weight * L_reinforce`` for the location policy with the
reward ``R = 1`` for a correct final answer and ``baseline = baseline_weight * L_baseline`` (squared
error) for the baseline; both from ``visattn.learning.reinforce``.

Every place a gradient path is cut, and why:

1. the sampled location ``l_t = mu_t + sigma * eps`` is **detached**: it is an action. Without the
   detach, the classification loss would reach the location net through the sample
   (reparameterisation), the "leak" that public RAM implementations suffer; with it, the location
   net's only gradient is REINFORCE's, through ``log pi(l_t | mu_t)`` as a function of ``mu_t``;
2. the core state entering the location net is **detached** (``h_{t-1}.detach()``) unless
   ``reinforce_core=True``: by default REINFORCE trains the location net alone and the core learns
   from the classification loss alone (lower-variance, as common implementations do); with
   ``reinforce_core=True`` the policy gradient also reaches the core and glimpse networks, as in
   the paper's formulation where ``theta`` is all parameters;
3. the core state entering the baseline is **detached**: the baseline's squared error trains the
   baseline head only and does not shape the core's features;
4. the baseline is **detached in the advantage** ``R - b_t`` (``learning.reinforce.advantage``):
   REINFORCE must not train the baseline;
5. the reward (``argmax`` correctness) has no gradient by construction.

Evaluation (``model.eval()``): deterministic by default, the glimpses go to the policy means.
With ``mc_samples = M > 1`` each image is run along ``M`` sampled trajectories and the class
probabilities are averaged (logits returned as ``log mean softmax``); the samples come from a
``torch.Generator`` seeded with ``eval_seed`` at every call, so evaluation is deterministic given
the input and does not touch the global RNG.

Coordinate convention: ``visattn.functional.glimpse`` (``(x, y)`` in ``[-1, 1]``, corners of the
image at ``+-1``, ``align_corners=False``). Locations pass through the sensor's
``AttentionTap("location")`` ``(B, 2)`` once per glimpse.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visattn._validate import check_choice, check_positive, check_range, check_type
from visattn.attention.glimpse import GlimpseSensor
from visattn.learning.reinforce import baseline_loss, classification_reward, gaussian_log_prob, reinforce_loss
from visattn.models._common import InputSpec, check_input, check_model_args
from visattn.models._registry import register_model

__all__ = ["RecurrentAttention", "GlimpseNetwork", "ram"]


class GlimpseNetwork(nn.Module):
    """``g = relu(W_hg relu(W_g rho(x, l)) + W_hl relu(W_l l))``: glimpse ``(B, k, C, g, g)`` and ``l (B, 2)`` -> ``(B, out)``.

    >>> GlimpseNetwork(64, glimpse_hidden=8, location_hidden=4, out_features=16)(
    ...     torch.rand(2, 1, 1, 8, 8), torch.zeros(2, 2)).shape
    torch.Size([2, 16])
    """

    def __init__(
        self, in_features: int, *, glimpse_hidden: int, location_hidden: int, out_features: int
    ) -> None:
        super().__init__()
        self.fc_glimpse = nn.Linear(in_features, glimpse_hidden)
        self.fc_location = nn.Linear(2, location_hidden)
        self.fc_glimpse_out = nn.Linear(glimpse_hidden, out_features)
        self.fc_location_out = nn.Linear(location_hidden, out_features)

    def forward(self, patches: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        h_g = F.relu(self.fc_glimpse(patches.flatten(1)))
        h_l = F.relu(self.fc_location(locations))
        return F.relu(self.fc_glimpse_out(h_g) + self.fc_location_out(h_l))


class RecurrentAttention(nn.Module):
    """RAM: ``(B, C, H, W)`` -> dict with ``logits (B, K)`` and the episode (see the module docstring).

    Args:
        num_classes: ``K``.
        in_chans: ``C``.
        num_glimpses: ``T``, glimpses (and location decisions) per image.
        patch_size: ``g`` (8 for 28x28 MNIST, 12 for the 60x60 tasks).
        num_scales: ``k`` (1 for 28x28, 3 for 60x60).
        scale_factor: side ratio of successive patches (2).
        padding_mode: what the sensor reads outside the image (``"zeros"``).
        glimpse_hidden, location_hidden, hidden_size: widths of ``h_g``, ``h_l`` and ``g_t = h_t``.
        core: ``"rnn"`` (the paper's ReLU RNN) or ``"lstm"``.
        location_std: ``sigma`` of the Gaussian policy, in ``[-1, 1]`` units.
        reinforce_weight, baseline_weight: weights of the two extra losses.
        reinforce_core: let REINFORCE reach the core and glimpse networks (detach 2 above).
        mc_samples: ``M`` trajectories averaged at evaluation (1: deterministic, policy means).
        eval_seed: seed of the evaluation generator when ``mc_samples > 1``.

    Output of ``forward`` (``model.train()``): ``logits (B, K)``, ``log_probs (B, T)``,
    ``baselines (B, T)``, ``locations (B, T, 2)`` (clamped, where each glimpse was taken),
    ``means (B, T, 2)`` (policy means). In ``eval()``: ``logits``, ``locations (B, T, 2)`` (the means),
    ``baselines (B, T)``; with ``mc_samples > 1`` ``locations`` is ``(M, B, T, 2)`` of the samples.

    >>> m = RecurrentAttention(num_glimpses=3)
    >>> out = m(torch.rand(2, 1, 28, 28))
    >>> out["logits"].shape, out["log_probs"].shape, out["locations"].shape
    (torch.Size([2, 10]), torch.Size([2, 3]), torch.Size([2, 3, 2]))
    >>> sorted(m.extra_losses(out, torch.tensor([1, 2])))
    ['baseline', 'reinforce']
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_chans: int = 1,
        num_glimpses: int = 6,
        patch_size: int = 8,
        num_scales: int = 1,
        scale_factor: int = 2,
        padding_mode: str = "zeros",
        glimpse_hidden: int = 128,
        location_hidden: int = 128,
        hidden_size: int = 256,
        core: str = "rnn",
        location_std: float = 0.1,
        reinforce_weight: float = 1.0,
        baseline_weight: float = 1.0,
        reinforce_core: bool = False,
        mc_samples: int = 1,
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_chans)
        check_positive(num_glimpses, "num_glimpses", integer=True)
        for name, value in (
            ("glimpse_hidden", glimpse_hidden),
            ("location_hidden", location_hidden),
            ("hidden_size", hidden_size),
            ("mc_samples", mc_samples),
        ):
            check_positive(value, name, integer=True)
        check_choice(core, "core", ("rnn", "lstm"))
        check_range(location_std, "location_std", 1e-6, 2.0)
        check_positive(reinforce_weight, "reinforce_weight", allow_zero=True)
        check_positive(baseline_weight, "baseline_weight", allow_zero=True)
        check_type(reinforce_core, "reinforce_core", bool)
        check_type(eval_seed, "eval_seed", int)
        self.input_spec = InputSpec(in_chans, min_size=(1, 1))
        self.num_glimpses = num_glimpses
        self.hidden_size = hidden_size
        self.core_type = core
        self.location_std = float(location_std)
        self.reinforce_weight = float(reinforce_weight)
        self.baseline_weight = float(baseline_weight)
        self.reinforce_core = reinforce_core
        self.mc_samples = mc_samples
        self.eval_seed = eval_seed

        self.sensor = GlimpseSensor(
            in_chans,
            size=patch_size,
            num_scales=num_scales,
            scale_factor=scale_factor,
            padding_mode=padding_mode,
        )
        self.glimpse_net = GlimpseNetwork(
            self.sensor.num_features,
            glimpse_hidden=glimpse_hidden,
            location_hidden=location_hidden,
            out_features=hidden_size,
        )
        if core == "rnn":
            self.core: nn.Module = nn.RNNCell(hidden_size, hidden_size, nonlinearity="relu")
        else:
            self.core = nn.LSTMCell(hidden_size, hidden_size)
        self.location_net = nn.Linear(hidden_size, 2)
        self.baseline_net = nn.Linear(hidden_size, 1)
        self.action_net = nn.Linear(hidden_size, num_classes)

    def _episode(
        self, x: torch.Tensor, noise: str, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Run ``T`` glimpses. ``noise``: ``"global"`` (train), ``"generator"`` (MC eval) or ``"none"`` (means)."""
        b = x.shape[0]
        h = x.new_zeros(b, self.hidden_size)
        state: Any = (h, x.new_zeros(b, self.hidden_size)) if self.core_type == "lstm" else h
        log_probs, baselines, locations, means = [], [], [], []
        pyramid = self.sensor.pyramid(x)  # box filtering shared by the T glimpses of this episode
        for _ in range(self.num_glimpses):
            h_policy = h if self.reinforce_core else h.detach()  # detach 2
            mean = torch.tanh(self.location_net(h_policy))
            if noise == "none":
                sample = mean.detach()
            else:
                eps = (
                    torch.randn_like(mean)
                    if noise == "global"
                    else torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
                )
                sample = (mean + self.location_std * eps).detach()  # detach 1: the action
            log_probs.append(gaussian_log_prob(sample, mean, self.location_std))
            baselines.append(self.baseline_net(h.detach()).squeeze(1))  # detach 3
            loc = sample.clamp(-1.0, 1.0)  # the environment clamps; log_prob is of the unclamped sample
            g = self.glimpse_net(self.sensor(x, loc, pyramid), loc)
            state = self.core(g, state)
            h = state[0] if self.core_type == "lstm" else state
            locations.append(loc)
            means.append(mean)
        return {
            "logits": self.action_net(h),
            "log_probs": torch.stack(log_probs, 1),
            "baselines": torch.stack(baselines, 1),
            "locations": torch.stack(locations, 1),
            "means": torch.stack(means, 1),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_input(self.input_spec, x)
        if self.training:
            return self._episode(x, "global", None)
        if self.mc_samples == 1:
            out = self._episode(x, "none", None)
            return {"logits": out["logits"], "locations": out["locations"], "baselines": out["baselines"]}
        m, b = self.mc_samples, x.shape[0]
        gen = torch.Generator(device=x.device).manual_seed(self.eval_seed)
        out = self._episode(x.repeat(m, 1, 1, 1), "generator", gen)  # (M*B, ...), sample-major
        probs = out["logits"].softmax(-1).reshape(m, b, -1).mean(0)
        return {
            "logits": probs.clamp_min(torch.finfo(probs.dtype).tiny).log(),
            "locations": out["locations"].reshape(m, b, self.num_glimpses, 2),
            "baselines": out["baselines"].reshape(m, b, self.num_glimpses).mean(0),
        }

    def extra_losses(self, output: dict[str, torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"reinforce": w_r L_reinforce, "baseline": w_b L_baseline}`` for a training-mode ``output``.

        The reward is ``1`` where ``argmax(output["logits"]) == target``.
        """
        if not isinstance(output, dict) or "log_probs" not in output:
            got = sorted(output) if isinstance(output, dict) else type(output).__name__
            raise ValueError(f"output must be a training-mode RAM output with 'log_probs', got {got}")
        reward = classification_reward(output["logits"], target)
        return {
            "reinforce": self.reinforce_weight
            * reinforce_loss(output["log_probs"], reward, output["baselines"]),
            "baseline": self.baseline_weight * baseline_loss(output["baselines"], reward),
        }


@register_model("ram")
def ram(**kwargs: Any) -> RecurrentAttention:
    """The Recurrent Attention Model (defaults: the paper's 28x28 MNIST setting, 8x8 patch, 1 scale, 6 glimpses).

    For the 60x60 tasks use ``patch_size=12, num_scales=3``.
    """
    return RecurrentAttention(**kwargs)
