"""REINFORCE with a learned baseline: the hybrid loss of the Recurrent Attention Model.

Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
learning", Machine Learning 1992; as used by Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of
Visual Attention", NIPS 2014, sec. 3.2 (eq. 2 and the baseline that follows it).

For a policy ``pi(l_t | s_{1:t}; theta)`` with actions ``l_t`` and return ``R`` the gradient of the
expected return is estimated from sampled episodes ``i`` as

    ``grad J ~= 1/M sum_i sum_t grad log pi(l_t^i | s^i_{1:t}) (R^i - b_t)``           (eq. 2, with baseline)

so minimising ``L_reinforce = -mean_i sum_t log pi(l_t^i) * stopgrad(R^i - b_t)`` follows it. The
baseline ``b_t`` (a learned estimate of ``E[R]``) reduces the variance and is trained by
``L_baseline = mean_{i,t} (b_t - R^i)^2``. Two gradient paths are cut, on purpose:

* the advantage ``A = R - b`` is detached (``stopgrad``): the REINFORCE term must not train the
  baseline (that would push ``b`` to inflate ``A``), and the baseline learns from its squared error only;
* the reward ``R`` carries no gradient (it is a 0/1 correctness indicator).

The sampled actions ``l_t`` must themselves be detached by the caller before ``gaussian_log_prob``:
the log-probability must be a function of the policy's *mean* only, never of a reparameterised
sample, or the classification loss would reach the policy through the sample.

The functions here depend on ``torch`` only.
"""

from __future__ import annotations

import math

import torch

from visattn._validate import check_positive, check_tensor

__all__ = [
    "gaussian_log_prob",
    "advantage",
    "reinforce_loss",
    "baseline_loss",
    "classification_reward",
]


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Log-density of ``sample`` under ``N(mean, std^2 I)``, summed over the last dim.

    ``log pi(l) = sum_d [-(l_d - mu_d)^2 / (2 std^2) - log std - log(2 pi) / 2]``.

    Args:
        sample: ``(..., D)`` actions, detached by the caller (see the module docstring).
        mean: ``(..., D)`` policy means (the gradient flows here).
        std: the fixed standard deviation (> 0).

    Returns:
        ``(...)`` log-probabilities.

    >>> gaussian_log_prob(torch.zeros(4, 3, 2), torch.zeros(4, 3, 2), 1.0).shape
    torch.Size([4, 3])
    """
    check_tensor(sample, "sample", nonempty=False, layout="(..., D)")
    check_tensor(mean, "mean", nonempty=False, layout="(..., D)")
    check_positive(std, "std")
    if not math.isfinite(std):
        raise ValueError(f"std must be finite, got {std!r}")
    if sample.shape != mean.shape:
        raise ValueError(
            f"sample and mean must have the same shape, got {tuple(sample.shape)} and {tuple(mean.shape)}"
        )
    z = (sample - mean) / std
    return (-0.5 * z.square() - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _check_reward(reward: torch.Tensor, batch: int) -> torch.Tensor:
    check_tensor(reward, "reward", ndim=1, layout="(B,)")
    if reward.shape[0] != batch:
        raise ValueError(f"reward must have shape ({batch},), got {tuple(reward.shape)}")
    return reward


def _check_bt(x: torch.Tensor, name: str) -> torch.Tensor:
    return check_tensor(x, name, ndim=2, layout="(B, T)")


def advantage(reward: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """Baseline-subtracted return ``A = R - stopgrad(b)``, shape ``(B, T)``.

    ``reward (B,)`` is the episode's return, the same at every step (reward only at the end);
    ``baseline (B, T)`` is detached so that REINFORCE never trains the baseline.

    >>> advantage(torch.ones(2), torch.full((2, 3), 0.25))
    tensor([[0.7500, 0.7500, 0.7500],
            [0.7500, 0.7500, 0.7500]])
    """
    _check_bt(baseline, "baseline")
    _check_reward(reward, baseline.shape[0])
    return reward.detach()[:, None] - baseline.detach()


def reinforce_loss(log_probs: torch.Tensor, reward: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """``L = -mean_b sum_t log pi_t * (R - stopgrad(b_t))``, a scalar; its gradient is eq. 2's estimate.

    Args:
        log_probs: ``(B, T)`` log-probabilities of the sampled actions (gradient to the policy).
        reward: ``(B,)`` returns.
        baseline: ``(B, T)`` baseline predictions (detached here).

    >>> reinforce_loss(torch.zeros(2, 3, requires_grad=True), torch.ones(2), torch.zeros(2, 3)).shape
    torch.Size([])
    """
    _check_bt(log_probs, "log_probs")
    if baseline.shape != log_probs.shape:
        raise ValueError(
            f"baseline must have the shape of log_probs {tuple(log_probs.shape)}, got {tuple(baseline.shape)}"
        )
    return -(log_probs * advantage(reward, baseline)).sum(1).mean()


def baseline_loss(baseline: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """``L_b = mean_{b,t} (b_t - R)^2``, a scalar: the baseline regresses the expected return.

    >>> float(baseline_loss(torch.zeros(2, 3), torch.ones(2)))
    1.0
    """
    _check_bt(baseline, "baseline")
    _check_reward(reward, baseline.shape[0])
    return (baseline - reward.detach()[:, None]).square().mean()


def classification_reward(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reward 1 for a correct final classification and 0 otherwise, ``(B,)`` float, no gradient.

    >>> classification_reward(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
    tensor([1., 0.])
    """
    check_tensor(logits, "logits", ndim=2, layout="(B, K)")
    if not isinstance(target, torch.Tensor) or target.shape != logits.shape[:1]:
        got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {got}")
    return (logits.detach().argmax(1) == target).to(logits.dtype)
