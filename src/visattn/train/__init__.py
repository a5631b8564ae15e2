"""Training: the engine (single process and torchrun DDP), checkpoints, REINFORCE, evolution strategies."""

__all__: list[str] = []
