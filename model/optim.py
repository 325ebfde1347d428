"""Keras optimizers with Caffe's per-layer rules (docs/recipe.md section 3).

CaffeSGD and CaffeAdam scale the learning rate of each variable by its layer's multiplier
(model.network.lr_multipliers: backbone and stage 1 kernels x1, biases x2; stages 2.. x4 / x8)
inside update_step, and add Caffe's weight decay to the gradient of kernels only
(gradient + decay * w). Keras' own options do not fit: an l2(decay) regulariser would add
2 * decay * w, and the optimizer's `weight_decay` is decoupled, AdamW style.

A Schedule (model.schedules) becomes a keras ExponentialDecay with staircase=True driven by
the optimizer's iteration counter, so restoring the optimizer restores the schedule.
"""
import keras
import numpy as np
from keras import ops

from model import network
from model.batchnorm import BN_SUFFIX
from model.schedules import SCHEDULES, WEIGHT_DECAY


def variable_rule(path):
    """(lr multiplier, weight decay multiplier) of a variable from its path "layer/kernel"
    (CMU's prototxt: kernels lr_mult 1|4 decay_mult 1, biases lr_mult 2|8 decay_mult 0;
    the training-time batch normalisation of conv X, layer X_bn: gamma like X's kernel,
    beta like X's bias, neither decayed)."""
    parts = path.split("/")
    layer, kind = (parts[-2] if len(parts) > 1 else ""), parts[-1]
    if layer.endswith(BN_SUFFIX):
        layer = layer[:-len(BN_SUFFIX)]
    kernel_mult, bias_mult = network.lr_multipliers(layer)
    if kind == "kernel":
        return kernel_mult, 1.0
    if kind in ("bias", "beta"):        # a batch normalisation's beta is its conv's bias
        return bias_mult, 0.0
    if kind == "gamma":                 # and gamma scales like the kernel, without decay
        return kernel_mult, 0.0
    return 1.0, 0.0


class CaffeRules:
    """Mixed in before a Keras optimizer: its update_step uses lr * multiplier(variable) and
    gradient + decay * w on kernels (Caffe's Solver::Regularize and the per-blob lr_mult)."""

    def __init__(self, *args, caffe_decay=WEIGHT_DECAY, **kwargs):
        super().__init__(*args, **kwargs)
        self.caffe_decay = float(caffe_decay)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        rules = [variable_rule(v.path) for v in variables]
        self._lr_mult = [r[0] for r in rules]
        self._decay_mult = [r[1] * self.caffe_decay for r in rules]

    def multiplier(self, variable):
        return self._lr_mult[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        i = self._get_variable_index(variable)
        gradient = ops.cast(gradient, variable.dtype)
        if self._decay_mult[i]:
            gradient = ops.add(gradient, ops.multiply(
                ops.cast(self._decay_mult[i], variable.dtype), variable))
        learning_rate = ops.multiply(ops.cast(learning_rate, variable.dtype),
                                     ops.cast(self._lr_mult[i], variable.dtype))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["caffe_decay"] = self.caffe_decay
        return config


class CaffeSGD(CaffeRules, keras.optimizers.SGD):
    """SGD with momentum and Caffe's per-layer rules (CMU's solver)."""


class CaffeAdam(CaffeRules, keras.optimizers.Adam):
    """Adam with Caffe's per-layer rules (the small configuration's recipe)."""


OPTIMIZERS = {"sgd": CaffeSGD, "adam": CaffeAdam}


def learning_rate(schedule, base_lr, batch_size, total_iterations):
    """A float or a keras ExponentialDecay(staircase) = Caffe's "step" policy."""
    step = schedule.stepsize(batch_size, total_iterations)
    if step is None or schedule.gamma == 1.0:
        return float(base_lr)
    return keras.optimizers.schedules.ExponentialDecay(
        float(base_lr), decay_steps=step, decay_rate=schedule.gamma, staircase=True)


def make_optimizer(schedule, base_lr=None, batch_size=10, total_iterations=1,
                   mixed_precision=False, weight_decay=None):
    """The Keras optimizer of `schedule` (a Schedule or its name); with mixed precision
    wrapped in keras' LossScaleOptimizer. Create it inside the strategy's scope."""
    if isinstance(schedule, str):
        schedule = SCHEDULES[schedule]
    lr = learning_rate(schedule, schedule.base_lr if base_lr is None else base_lr, batch_size,
                       total_iterations)
    decay = schedule.weight_decay if weight_decay is None else weight_decay
    cls = OPTIMIZERS[schedule.optimizer]
    if schedule.optimizer == "sgd":
        opt = cls(learning_rate=lr, momentum=schedule.momentum, caffe_decay=decay)
    else:
        opt = cls(learning_rate=lr, caffe_decay=decay)
    if mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def current_lr(optimizer):
    """The learning rate the next step uses (through a LossScaleOptimizer's wrapper)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(np.asarray(lr))
