"""Separable Natural Evolution Strategies (SNES; Schaul, Glasmachers, Schmidhuber, "High Dimensions and
Heavy Tails for Natural Evolution Strategies", GECCO 2011; Wierstra et al., "Natural Evolution
Strategies", JMLR 2014, Algorithm 6), the search dasNet trains its policy with.

The search distribution is ``N(mu, diag(sigma^2))`` over a flat parameter vector of ``d`` numbers.
Each iteration (``ask`` / ``tell``):

1. draw ``s_k ~ N(0, I_d)``, ``k = 1..p`` (with ``mirrored=True``: ``p/2`` draws and their negatives);
   candidates ``z_k = mu + sigma * s_k``;
2. evaluate the fitness ``f(z_k)`` (*maximised*) of all ``p`` candidates at once (the caller
   evaluates the ``(p, d)`` population in one batched call);
3. fitness shaping: sort by fitness, the ``i``-th best gets the utility
   ``u_i = max(0, ln(p/2 + 1) - ln i) / sum_j max(0, ln(p/2 + 1) - ln j) - 1/p`` (sums to 0);
4. natural gradients ``g_mu = sum_k u_k s_k``, ``g_sigma = sum_k u_k (s_k^2 - 1)``; updates
   ``mu <- mu + eta_mu * sigma * g_mu`` and ``sigma <- sigma * exp(eta_sigma / 2 * g_sigma)``,
   with the default rates ``eta_mu = 1``, ``eta_sigma = (3 + ln d) / (5 sqrt(d))`` and population
   ``p = 4 + floor(3 ln d)``.

Everything runs under ``torch.no_grad``: SNES owns ``mu`` and ``sigma`` only and never computes a
gradient. ``mu``, ``sigma``, the iteration count and the state of SNES's own CPU ``torch.Generator``
are buffers, so ``state_dict()`` / ``load_state_dict()`` resume a search exactly (the global RNG is
never used).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from visattn._validate import check_positive, check_tensor, check_type

__all__ = ["SNES", "snes_defaults", "fitness_shaping_utilities", "rank_utilities"]


def snes_defaults(dim: int) -> tuple[int, float, float]:
    """Default ``(population, eta_mu, eta_sigma)`` of SNES for ``dim`` parameters.

    ``p = 4 + floor(3 ln d)``, ``eta_mu = 1``, ``eta_sigma = (3 + ln d) / (5 sqrt(d))``.

    >>> p, eta_mu, eta_sigma = snes_defaults(100)
    >>> p, eta_mu, round(eta_sigma, 4)
    (17, 1.0, 0.1521)
    """
    check_positive(dim, "dim", integer=True)
    return 4 + int(math.floor(3 * math.log(dim))), 1.0, (3 + math.log(dim)) / (5 * math.sqrt(dim))


def fitness_shaping_utilities(population: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Utilities ``u_i`` for ranks ``i = 1..p`` (index 0 is the best candidate), shape ``(p,)``.

    ``u_i = max(0, ln(p/2 + 1) - ln i) / sum_j max(0, ln(p/2 + 1) - ln j) - 1/p``: non-increasing in
    the rank, sum to 0, so only the order of the fitnesses matters (invariant to monotone transforms).

    >>> u = fitness_shaping_utilities(6)
    >>> u.shape, bool(u.sum().abs() < 1e-6), bool((u[:-1] >= u[1:]).all())
    (torch.Size([6]), True, True)
    """
    check_positive(population, "population", integer=True)
    ranks = torch.arange(1, population + 1, dtype=torch.float64)
    raw = (math.log(population / 2 + 1) - ranks.log()).clamp(min=0)
    return (raw / raw.sum() - 1.0 / population).to(dtype)


def rank_utilities(fitness: torch.Tensor) -> torch.Tensor:
    """The utility of each candidate given its fitness ``(p,)`` (higher is better), shape ``(p,)``.

    Ties keep the order of the candidates (a stable sort).

    >>> rank_utilities(torch.tensor([0.1, 3.0, -2.0])).argmax().item()
    1
    """
    check_tensor(fitness, "fitness", ndim=1, layout="(p,)")
    order = torch.sort(fitness, descending=True, stable=True).indices
    u = fitness_shaping_utilities(fitness.numel(), dtype=fitness.dtype).to(fitness.device)
    out = torch.empty_like(u)
    out[order] = u
    return out


class SNES(nn.Module):
    """Separable NES over ``dim`` parameters; maximises a fitness of a ``(p, dim)`` population.

    Args:
        dim: ``d``, the number of parameters searched.
        mu0: initial mean ``(d,)`` (default zeros).
        sigma0: initial standard deviation, a float or ``(d,)`` tensor.
        population: ``p`` candidates per iteration (default ``4 + floor(3 ln d)``, rounded up to even
            with ``mirrored``).
        mirrored: sample ``p/2`` perturbations and their negatives (antithetic sampling).
        eta_mu, eta_sigma: learning rates (defaults ``1`` and ``(3 + ln d) / (5 sqrt d)``).
        seed: seed of the search's own generator.

    >>> es = SNES(3, sigma0=0.5, seed=0)
    >>> s, z = es.ask()
    >>> z.shape
    torch.Size([7, 3])
    >>> es.tell(s, -(z**2).sum(1))["fitness_best"] <= 0
    True
    >>> es.mu.shape, int(es.iteration)
    (torch.Size([3]), 1)
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    iteration: torch.Tensor
    rng_state: torch.Tensor

    def __init__(
        self,
        dim: int,
        *,
        mu0: torch.Tensor | None = None,
        sigma0: float | torch.Tensor = 1.0,
        population: int | None = None,
        mirrored: bool = False,
        eta_mu: float | None = None,
        eta_sigma: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_positive(dim, "dim", integer=True)
        check_type(mirrored, "mirrored", bool)
        check_type(seed, "seed", int)
        p_def, eta_mu_def, eta_sigma_def = snes_defaults(dim)
        if population is not None:
            check_positive(population, "population", integer=True)
        p = p_def if population is None else population
        if mirrored and p % 2:
            if population is not None:
                raise ValueError(f"population must be even with mirrored=True, got {population}")
            p += 1
        if p < 2:
            raise ValueError(f"population must be >= 2, got {p}")
        self.dim, self.population, self.mirrored = dim, p, mirrored
        self.eta_mu = eta_mu_def if eta_mu is None else float(check_positive(eta_mu, "eta_mu"))
        self.eta_sigma = eta_sigma_def if eta_sigma is None else float(check_positive(eta_sigma, "eta_sigma"))
        self.seed = seed
        if mu0 is None:
            mu0 = torch.zeros(dim)
        check_tensor(mu0, "mu0", ndim=1, layout="(d,)")
        if mu0.numel() != dim:
            raise ValueError(f"mu0 must have shape ({dim},), got {tuple(mu0.shape)}")
        if isinstance(sigma0, torch.Tensor):
            check_tensor(sigma0, "sigma0", ndim=(0, 1), nonempty=False, layout="(d,)")
            if sigma0.ndim == 1 and sigma0.numel() != dim:
                raise ValueError(f"sigma0 must be a float or have shape ({dim},), got {tuple(sigma0.shape)}")
            sig = sigma0.detach().float().expand(dim).clone()
        else:
            check_positive(sigma0, "sigma0")
            sig = torch.full((dim,), float(sigma0))
        if not bool((sig > 0).all()):
            raise ValueError("sigma0 must be > 0 everywhere")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.register_buffer("mu", mu0.detach().float().clone())
        self.register_buffer("sigma", sig)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self.register_buffer("rng_state", gen.get_state())

    @torch.no_grad()
    def ask(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the population: ``(s, z)``, both ``(p, d)``, with ``z = mu + sigma * s``.

        Advances the stored generator state; the noise is drawn on the CPU (so the stream is the same on
        every device) and moved to ``mu``'s device.
        """
        gen = torch.Generator(device="cpu")
        gen.set_state(self.rng_state.detach().cpu())
        half = self.population // 2 if self.mirrored else self.population
        s = torch.randn(half, self.dim, generator=gen)
        if self.mirrored:
            s = torch.cat([s, -s])
        self.rng_state.copy_(gen.get_state())
        s = s.to(self.mu.device)
        return s, self.mu + self.sigma * s

    @torch.no_grad()
    def tell(self, s: torch.Tensor, fitness: torch.Tensor) -> dict[str, float]:
        """Update ``mu`` and ``sigma`` from the perturbations ``s (p, d)`` and their fitness ``(p,)``.

        Returns the iteration's statistics (floats): ``fitness_mean``, ``fitness_best``, ``sigma_mean``.
        """
        check_tensor(s, "s", ndim=2, layout="(p, d)")
        check_tensor(fitness, "fitness", ndim=1, layout="(p,)")
        if s.shape != (self.population, self.dim) or fitness.shape[0] != self.population:
            raise ValueError(
                f"s must be ({self.population}, {self.dim}) and fitness ({self.population},), "
                f"got s {tuple(s.shape)} and fitness {tuple(fitness.shape)}"
            )
        if not bool(torch.isfinite(fitness).all()):
            raise ValueError(f"fitness must be finite, got {fitness.tolist()}")
        u = rank_utilities(fitness.float().to(s.device))
        s = s.float()
        grad_mu = u @ s
        grad_sigma = u @ (s * s - 1.0)
        self.mu.add_(self.eta_mu * self.sigma * grad_mu)
        self.sigma.mul_(torch.exp(0.5 * self.eta_sigma * grad_sigma))
        self.iteration.add_(1)
        return {
            "fitness_mean": fitness.float().mean().item(),
            "fitness_best": fitness.float().max().item(),
            "sigma_mean": self.sigma.mean().item(),
        }

    @torch.no_grad()
    def step(self, fitness_fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """One iteration: ``ask``, ``fitness_fn(z (p, d)) -> (p,)`` (one batched call), ``tell``."""
        s, z = self.ask()
        return self.tell(s, fitness_fn(z))

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, population={self.population}, mirrored={self.mirrored}, "
            f"eta_mu={self.eta_mu:.4g}, eta_sigma={self.eta_sigma:.4g}, seed={self.seed}"
        )
