"""Training: the settings (defined once), the loop, evaluation, checkpoints, optimizers, learning-rate
schedules and augmentation, and whole runs from a spec file (`train`, `evaluate_checkpoint`)."""
from ..data.examples import Data, holdout_split, inputs, load_data
from ..errors import CheckpointError, TrainingError
from .evaluation import Evaluation, evaluate, format_confusion
from .interrupts import Terminated
from .loop import Outcome, Trainer, epoch_order, mask_generator
from .run import Options, Trained, evaluate_checkpoint, train
from .settings import SETTINGS, Config, Setting, make_config

__all__ = ["SETTINGS", "CheckpointError", "Config", "Data", "Evaluation", "Options", "Outcome", "Setting",
           "Terminated", "Trained", "Trainer", "TrainingError", "epoch_order", "evaluate", "evaluate_checkpoint",
           "format_confusion", "holdout_split", "inputs", "load_data", "make_config", "mask_generator", "train"]
