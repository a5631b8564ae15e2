"""SNES (visattn.learning.snes): utilities, update rule, convergence on test functions, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from visattn.learning.snes import SNES, fitness_shaping_utilities, rank_utilities, snes_defaults


@pytest.mark.parametrize("p", [2, 5, 6, 17, 64])
def test_utilities_sum_to_zero_and_decrease_with_rank(p):
    u = fitness_shaping_utilities(p, dtype=torch.float64)
    assert u.shape == (p,)
    assert abs(u.sum().item()) < 1e-12
    assert bool((u[:-1] >= u[1:]).all()) and u[0] > u[-1]
    # the worse half gets exactly -1/p (the max(0, .) cut-off)
    assert torch.allclose(u[-(p // 2) :], torch.full((p // 2,), -1.0 / p, dtype=torch.float64))


def test_rank_utilities_follow_the_order_and_ignore_the_scale():
    f = torch.tensor([0.3, -5.0, 2.0, 1.0])
    u = rank_utilities(f)
    ref = fitness_shaping_utilities(4)
    assert torch.equal(u[[2, 3, 0, 1]], ref)  # best, 2nd, 3rd, worst
    assert torch.equal(rank_utilities(torch.exp(3 * f) - 7), u)  # monotone transform: same utilities
    tie = rank_utilities(torch.tensor([1.0, 1.0, 0.0]))
    assert tie[0] >= tie[1] > tie[2]


def test_defaults_follow_wierstra_et_al():
    for d in (1, 10, 10272):
        p, eta_mu, eta_sigma = snes_defaults(d)
        assert p == 4 + math.floor(3 * math.log(d))
        assert eta_mu == 1.0
        assert eta_sigma == pytest.approx((3 + math.log(d)) / (5 * math.sqrt(d)))
    es = SNES(10272)
    assert es.eta_sigma == pytest.approx((3 + math.log(10272)) / (5 * math.sqrt(10272)))


def test_one_update_matches_the_natural_gradient_formulas():
    es = SNES(
        3,
        mu0=torch.tensor([1.0, 2.0, 3.0]),
        sigma0=torch.tensor([0.5, 1.0, 2.0]),
        population=4,
        eta_mu=0.7,
        eta_sigma=0.3,
    )
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-1.0, 1.0, 1.0], [0.0, -0.5, 0.25]])
    fitness = torch.tensor([0.2, 0.9, -1.0, 0.1])  # ranks: 2nd, 1st, 4th, 3rd
    mu0, sigma0 = es.mu.clone(), es.sigma.clone()
    u = fitness_shaping_utilities(4)[[1, 0, 3, 2]]
    es.tell(s, fitness)
    grad_mu = (u[:, None] * s).sum(0)
    grad_sigma = (u[:, None] * (s**2 - 1)).sum(0)
    assert torch.allclose(es.mu, mu0 + 0.7 * sigma0 * grad_mu)
    assert torch.allclose(es.sigma, sigma0 * torch.exp(0.15 * grad_sigma))
    assert int(es.iteration) == 1


def test_ask_returns_mirrored_pairs_and_leaves_the_global_rng_alone():
    es = SNES(4, sigma0=0.3, population=6, mirrored=True, seed=3)
    before = torch.random.get_rng_state()
    s, z = es.ask()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert s.shape == (6, 4) and torch.equal(s[3:], -s[:3])
    assert torch.allclose(z, es.mu + es.sigma * s)
    s2, _ = es.ask()
    assert not torch.equal(s, s2)  # the stored generator state advanced


@pytest.mark.parametrize("mirrored", [False, True])
def test_minimises_a_shifted_sphere(mirrored):
    shift = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])
    es = SNES(5, sigma0=1.0, seed=0, mirrored=mirrored)
    for _ in range(300):
        es.step(lambda z: -((z - shift) ** 2).sum(1))
    assert (es.mu - shift).abs().max() < 1e-4  # 115 / 99 iterations reach this with seed 0
    assert es.sigma.max() < 1e-3


def test_descends_a_rosenbrock_valley():
    """2-D Rosenbrock from (-1, -1), f = 404: f(mu) < 0.03 in 2,000 iterations (measured 0.014).

    The valley is not axis-aligned, which a diagonal (separable) search follows only slowly.
    """

    def rosen(z):
        return (100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2).sum(1)

    es = SNES(2, mu0=torch.tensor([-1.0, -1.0]), sigma0=0.5, seed=0, mirrored=True)
    values = []
    for i in range(2000):
        es.step(lambda z: -rosen(z))
        if (i + 1) % 500 == 0:
            values.append(rosen(es.mu[None]).item())
    assert values[-1] < 0.03
    assert values == sorted(values, reverse=True)


def test_resume_from_state_dict_gives_the_identical_trajectory():
    def fitness(z):
        return -(z - 0.3).abs().sum(1)

    a = SNES(6, sigma0=0.5, seed=11, mirrored=True)
    for _ in range(5):
        a.step(fitness)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    for _ in range(5):
        a.step(fitness)
    b = SNES(6, sigma0=2.0, seed=99, mirrored=True)  # different start; the state overrides it
    b.load_state_dict(state)
    for _ in range(5):
        b.step(fitness)
    assert torch.equal(a.mu, b.mu) and torch.equal(a.sigma, b.sigma)
    assert torch.equal(a.rng_state, b.rng_state) and int(b.iteration) == 10


def test_runs_without_building_a_graph():
    es = SNES(3)
    s, z = es.ask()
    assert not z.requires_grad
    es.tell(s, torch.randn(es.population, requires_grad=True))
    assert not es.mu.requires_grad and not es.sigma.requires_grad


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="dim"):
        SNES(0)
    with pytest.raises(ValueError, match="even"):
        SNES(4, population=5, mirrored=True)
    with pytest.raises(ValueError, match="population"):
        SNES(4, population=1)
    with pytest.raises(ValueError, match="sigma0"):
        SNES(4, sigma0=-1.0)
    with pytest.raises(ValueError, match="sigma0"):
        SNES(4, sigma0=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="mu0"):
        SNES(4, mu0=torch.zeros(3))
    with pytest.raises(TypeError, match="mirrored"):
        SNES(4, mirrored="yes")  # type: ignore[arg-type]
    es = SNES(4, population=6)
    s, _ = es.ask()
    with pytest.raises(ValueError, match="fitness"):
        es.tell(s, torch.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        es.tell(s, torch.tensor([0.0, 1.0, float("nan"), 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="s must"):
        es.tell(s[:, :3], torch.zeros(6))
    with pytest.raises(ValueError, match="population"):
        fitness_shaping_utilities(0)
