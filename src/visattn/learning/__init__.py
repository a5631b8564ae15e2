"""Learning rules that are not training loops: REINFORCE (RAM) and separable natural evolution strategies (dasNet).

Pure ``torch`` functions and classes below ``visattn.models`` (models import them; they import
nothing of visattn but ``_validate``). The training loop itself is ``visattn.train``.

>>> from visattn.learning import SNES
>>> SNES(3, population=4, seed=0).mu.shape
torch.Size([3])
"""

from visattn.learning.reinforce import (
    advantage,
    baseline_loss,
    classification_reward,
    gaussian_log_prob,
    reinforce_loss,
)
from visattn.learning.snes import SNES, fitness_shaping_utilities, rank_utilities, snes_defaults

__all__ = [
    "SNES",
    "advantage",
    "baseline_loss",
    "classification_reward",
    "fitness_shaping_utilities",
    "gaussian_log_prob",
    "rank_utilities",
    "reinforce_loss",
    "snes_defaults",
]
