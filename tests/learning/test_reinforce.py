"""REINFORCE helpers: the Gaussian log-probability, the detached advantage, and a toy policy that learns."""

from __future__ import annotations

import math

import pytest
import torch

from visattn.learning.reinforce import (
    advantage,
    baseline_loss,
    classification_reward,
    gaussian_log_prob,
    reinforce_loss,
)


def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    sample = torch.randn(5, 3, 2, generator=g, dtype=torch.float64)
    want = torch.distributions.Normal(mean, 0.3).log_prob(sample).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(sample, mean, 0.3), want)


def test_the_score_function_is_the_analytic_one():
    mean = torch.zeros(1, 2, requires_grad=True)
    sample = torch.tensor([[0.5, -0.2]])
    gaussian_log_prob(sample, mean, 0.5).sum().backward()
    torch.testing.assert_close(mean.grad, (sample - 0.0) / 0.25)  # d/dmu log N = (l - mu) / sigma^2


def test_the_advantage_and_reinforce_loss_never_train_the_baseline():
    baseline = torch.full((3, 2), 0.4, requires_grad=True)
    log_probs = torch.zeros(3, 2, requires_grad=True)
    reward = torch.tensor([1.0, 0.0, 1.0])
    a = advantage(reward, baseline)
    assert not a.requires_grad
    torch.testing.assert_close(a, torch.tensor([[0.6, 0.6], [-0.4, -0.4], [0.6, 0.6]]))
    reinforce_loss(log_probs, reward, baseline).backward()
    assert baseline.grad is None
    # d L / d log_pi[b, t] = -A[b, t] / B  (sum over steps, mean over the batch)
    torch.testing.assert_close(log_probs.grad, -a / 3)


def test_baseline_loss_is_the_squared_error_to_the_reward():
    baseline = torch.tensor([[0.0, 0.5], [1.0, 0.25]], requires_grad=True)
    reward = torch.tensor([1.0, 0.0])
    loss = baseline_loss(baseline, reward)
    torch.testing.assert_close(loss, torch.tensor((1 + 0.25 + 1 + 0.0625) / 4))
    loss.backward()
    torch.testing.assert_close(baseline.grad, 2 * (baseline.detach() - reward[:, None]) / 4)


def test_a_few_reinforce_updates_move_the_policy_mean_toward_the_rewarded_place():
    """The reward is 1 when the sampled location lands within 0.3 of a target; nothing else matters."""
    torch.manual_seed(0)
    target = torch.tensor([0.5, -0.4])
    theta = torch.zeros(2, requires_grad=True)  # policy mean mu = tanh(theta), starting at the centre
    b = torch.zeros(1, requires_grad=True)  # a learned scalar baseline
    opt = torch.optim.SGD([theta, b], lr=0.5)
    std = 0.3
    start = float((torch.tanh(theta.detach()) - target).norm())
    for _ in range(40):
        mean = torch.tanh(theta).expand(256, 1, 2)
        sample = (mean + std * torch.randn_like(mean)).detach()
        reward = ((sample[:, 0] - target).norm(dim=1) < 0.3).float()
        baseline = b.expand(256, 1)
        loss = reinforce_loss(gaussian_log_prob(sample, mean, std), reward, baseline)
        loss = loss + baseline_loss(baseline, reward)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float((torch.tanh(theta.detach()) - target).norm())
    assert end < 0.5 * start, (start, end)
    assert 0.0 < float(b.detach()) < 1.0  # the baseline tracks the success rate


def test_classification_reward_is_one_for_correct_answers_only():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    r = classification_reward(logits, torch.tensor([1, 2, 2]))
    torch.testing.assert_close(r, torch.tensor([1.0, 0.0, 1.0]))
    assert not r.requires_grad


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: gaussian_log_prob(torch.zeros(2, 2), torch.zeros(2, 3), 1.0), ValueError, "same shape"),
        (lambda: gaussian_log_prob(torch.zeros(2, 2), torch.zeros(2, 2), 0.0), ValueError, "std"),
        (lambda: advantage(torch.ones(3), torch.zeros(2, 4)), ValueError, r"reward must have shape \(2,\)"),
        (lambda: reinforce_loss(torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 4)), ValueError, "baseline"),
        (lambda: baseline_loss(torch.zeros(2), torch.ones(2)), ValueError, "baseline"),
        (lambda: classification_reward(torch.zeros(2, 3), torch.zeros(3)), ValueError, "target"),
        (lambda: gaussian_log_prob(torch.zeros(2, 2), torch.zeros(2, 2), math.nan), ValueError, "std"),
    ],
)
def test_bad_inputs_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
