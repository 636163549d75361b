"""Training: losses, the per-family step, the shared loop, evaluation."""

from .config import (
    ConfigError,
    DataConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
)
from .loop import ResumeError, RunSummary, train

__all__ = [
    "ConfigError",
    "DataConfig",
    "ResumeError",
    "RunSummary",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "train",
]
