"""Application-level workflows over models and the training engine (they sit beside the CLI, above ``train``)."""

__all__: list[str] = []
