"""The learning-rate recipes a pose expert trains with, by name (docs/recipe.md section 3).

Each is a step policy, lr = base_lr * gamma ** floor(iteration / stepsize), with its optimizer.
"caffe" and "keras" are the two published variants; "small" is the CPU recipe of the small
configuration (Adam with the same per-layer multipliers and decay). model.optim turns a
Schedule into a Keras optimizer; this module stays free of Keras so that the command line can
list the names without starting TensorFlow.
"""
from dataclasses import dataclass

from model.errors import UserError

WEIGHT_DECAY = 5e-4
MOMENTUM = 0.9
# Samples per epoch of COCO in the reference trainers (train2014 + val2014 minus 2,645).
COCO_EPOCH_SAMPLES = 121746


@dataclass(frozen=True)
class Schedule:
    """A step learning-rate policy and the optimizer it drives.

    stepsize in iterations: `step_iterations` when given, else `step_epochs` epochs of
    `epoch_samples` samples divided by the batch size (the Keras reproduction's epochs of
    COCO), else `step_fraction` of the run's total iterations (None: a constant rate)."""
    name: str
    optimizer: str                  # "sgd" or "adam"
    base_lr: float
    gamma: float = 0.333
    step_iterations: int = None
    step_epochs: float = None
    epoch_samples: int = COCO_EPOCH_SAMPLES
    step_fraction: float = None
    momentum: float = MOMENTUM
    weight_decay: float = WEIGHT_DECAY
    note: str = ""

    def stepsize(self, batch_size, total_iterations):
        if self.step_iterations:
            return int(self.step_iterations)
        if self.step_epochs:
            return max(1, int(round(self.step_epochs * self.epoch_samples / batch_size)))
        if self.step_fraction:
            return max(1, int(round(self.step_fraction * total_iterations)))
        return None


SCHEDULES = {
    "caffe": Schedule("caffe", "sgd", 4e-5, step_iterations=136106,
                      note="CMU's solver: SGD 4e-5, x0.333 every 136,106 iterations"),
    "keras": Schedule("keras", "sgd", 2e-5, step_epochs=17,
                      note="Keras reproduction: SGD 2e-5, x0.333 every 17 epochs of 121,746 "
                           "samples (in iterations of the batch size)"),
    "small": Schedule("small", "adam", 1e-3, step_fraction=0.7,
                      note="CPU recipe of the small configuration: Adam 1e-3 with the same "
                           "multipliers and decay, x0.333 after 70 % of the iterations"),
}


def get_schedule(name):
    """The Schedule of a name of SCHEDULES (UserError naming the choices otherwise)."""
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[name]
