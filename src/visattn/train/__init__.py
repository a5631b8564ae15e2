"""Training: the engine (single process and torchrun DDP), checkpoints, REINFORCE, evolution strategies."""

from visattn.train.checkpoint import atomic_save, export_safetensors, load_weights, safe_load
from visattn.train.config import TrainConfig, apply_overrides, config_from_dict, load_config
from visattn.train.engine import Trainer, build_model, evaluate, fit
from visattn.train.snes import SNES, fitness_shaping_utilities, rank_utilities, snes_defaults

__all__ = [
    "SNES",
    "fitness_shaping_utilities",
    "rank_utilities",
    "snes_defaults",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "atomic_save",
    "build_model",
    "config_from_dict",
    "evaluate",
    "export_safetensors",
    "fit",
    "load_config",
    "load_weights",
    "safe_load",
]
