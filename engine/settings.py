"""The settings a run may be told, defined once: the spec's `training:` fields and their defaults,
the trainer's Config and the command line's flags all come from SETTINGS.  It stands apart from
engine/training and engine/compiler, which both read it, so that the compiler knows no training."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting: its type, default, what it means, and where it may be given."""

    name: str
    kind: type                # int, float or str
    default: object           # the spec's default; None: unset
    help: str
    low: float | None = None  # the smallest value it takes (float: more than low)
    zero: bool = False        # a float that may also be 0 (off)
    in_spec: bool = True      # may be given in layers.yaml's training: (else only when a run is started)
    in_config: bool = True    # decides the run's trajectory: a checkpoint keeps it and a resume must match
    on_resume: bool = False   # may change when a run resumes (epochs: train longer)


SETTINGS = (
    Setting("dataset", str, "fashion-mnist", "the data set"),
    Setting("optimizer", str, "adam", "the update rule"),
    Setting("lr", float, 0.001, "the learning rate (eta of eq. 4)", low=0),
    Setting("batch_size", int, 64, "examples per update (B of eq. 8-9)", low=1),
    Setting("epochs", int, 5, "passes over the training set; on resume, more than the checkpoint's trains further",
            low=1, on_resume=True),
    Setting("seed", int, 0, "seeds the initial weights, each epoch's data order, the dropout masks and the "
            "augmentation", low=0),
    Setting("schedule", str, "constant", "the learning rate over the run: constant, or cosine (from lr down to 0 "
            "over the epochs)"),
    Setting("warmup", int, 0, "epochs over which the rate rises in a straight line from near 0 to lr before the "
            "schedule takes over (0: none)", low=0),
    Setting("weight_decay", float, 0.0, "decoupled weight decay (AdamW): each step multiplies the weights (not "
            "biases or gains) by 1 - rate * weight_decay (0: none)", low=0, zero=True),
    Setting("augment", str, "none", "what changes each training image at random: flip (a mirror image), shift "
            "(by up to 2 pixels; shift1 to shift9 by up to that many), erase (a random rectangle of noise), "
            "joined by commas, or none"),
    Setting("test_augment", str, "none", "how a test image is seen: flip (its class probabilities are the mean of "
            "its own and its mirror image's: test-time augmentation, in evaluation and predictions), or none",
            on_resume=True),
    Setting("limit", int, None, "train on the first N training examples", low=1, in_spec=False),
    Setting("holdout", int, None, "use the test split alone: hold N of its examples out (a fixed shuffle) for "
            "testing and train on the rest (for copies with only the test split)", low=1, in_spec=False),
    Setting("test_limit", int, None, "test on the first N test examples", low=1, in_spec=False),
    Setting("dtype", str, "float32", "the arrays' floating-point type", in_config=False),
    Setting("optimize", str, "auto", "opt_einsum's path optimizer for every contraction (auto, greedy, optimal, "
            "dp, ...)", in_config=False),
)
BY_NAME = {s.name: s for s in SETTINGS}
# what `input: auto` and `classes` in layers.yaml mean when no data is given: the named data sets'
# images (MNIST and Fashion-MNIST, 28 x 28 x 1 in 10 classes; engine/data/datasets.py agrees)
NAMED_DATA_INPUT, NAMED_DATA_CLASSES = (28, 28, 1), 10
SPEC_DEFAULTS = {s.name: s.default for s in SETTINGS if s.in_spec}  # layers.yaml's training: fields
