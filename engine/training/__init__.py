"""Training: settings, the loop, evaluation, checkpoints, optimizers, schedules and augmentation."""
from .loop import *  # noqa: F403 -- placeholder until the loop is split
from .loop import Config, Data, Terminated, Trainer, TrainingError, evaluate, make_config  # noqa: F401
