"""Training: the engine (single process and torchrun DDP), its config and run folders.

Checkpoint I/O lives in ``visattn.checkpoint`` and the learning rules (REINFORCE, SNES) in
``visattn.learning``; both are re-exported here for compatibility.
"""

from visattn.checkpoint import atomic_save, export_safetensors, load_weights, safe_load
from visattn.learning.snes import SNES, fitness_shaping_utilities, rank_utilities, snes_defaults
from visattn.train.build import build_model, check_model_fits
from visattn.train.callbacks import Callback
from visattn.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
from visattn.train.engine import Trainer, fit
from visattn.train.evaluate import evaluate, logits_of
from visattn.train.run import LoadedRun, load_run

__all__ = [
    "Callback",
    "SNES",
    "fitness_shaping_utilities",
    "rank_utilities",
    "snes_defaults",
    "LoadedRun",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "atomic_save",
    "build_model",
    "check_model_fits",
    "config_from_dict",
    "evaluate",
    "export_safetensors",
    "fit",
    "load_config",
    "load_run",
    "logits_of",
    "load_weights",
    "safe_load",
]
