"""One optimizer step of the pose loss, on one device or split over a tf.distribute strategy.

Loss: every one of the 2 x num_stages outputs of the training model is already multiplied by
the mask (model.network), and so are the targets (model.pipeline). Per output the loss is
Caffe's EuclideanLoss, sum of squared errors / batch_size / 2; the outputs are summed with
weight 1 (docs/recipe.md section 3). Under a distribution strategy each replica divides its
own sum by the GLOBAL batch size; the optimizer sums the replicas' gradients (Keras' tf
optimizer all-reduces with SUM), which gives exactly the gradient of the global batch's loss.
"""
import os

import numpy as np
import tensorflow as tf

from model.errors import UserError
from model.train_config import DISTRIBUTE


def output_names(num_stages):
    """Names of the training model's outputs (and the pipeline's targets), in model order."""
    return [f"stage{s}_L{b}" for s in range(1, num_stages + 1) for b in (1, 2)]


def pose_losses(targets, outputs, names, global_batch_size):
    """Per-output Caffe EuclideanLoss: sum((output - target)^2) / global_batch_size / 2, as a
    float32 vector in the order of `names` (outputs and targets are already masked)."""
    losses = [tf.reduce_sum(tf.square(tf.cast(o, tf.float32) - tf.cast(targets[n], tf.float32)))
              for n, o in zip(names, outputs)]
    return tf.stack(losses) / (2.0 * float(global_batch_size))


def pose_loss(targets, outputs, names, global_batch_size):
    """The training loss: the sum of pose_losses (the 12 outputs with weight 1 for full)."""
    return tf.reduce_sum(pose_losses(targets, outputs, names, global_batch_size))


def make_strategy(distribute="none", devices=None):
    """tf.distribute strategy: "none" (the default strategy, one device), "mirrored"
    (MirroredStrategy over `devices`, default every visible GPU, else the CPU) or
    "multiworker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG variable)."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if distribute == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("--distribute multiworker needs the TF_CONFIG environment "
                            "variable (cluster and this worker's task); see README")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown --distribute {distribute!r}; choose from {', '.join(DISTRIBUTE)}")


def is_chief(strategy):
    """Only the chief of a multi-worker run writes files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def split_for_replicas(strategy, arrays):
    """Per-replica values: replica r of R gets rows [r*B/R, (r+1)*B/R) of every array of the
    (nested) global batch. The default strategy gets the arrays as they are."""
    n = strategy.num_replicas_in_sync
    if n == 1 and not isinstance(strategy, (tf.distribute.MirroredStrategy,
                                            tf.distribute.MultiWorkerMirroredStrategy)):
        return arrays

    def part(ctx):
        r = ctx.replica_id_in_sync_group
        return tf.nest.map_structure(
            lambda a: a[r * len(a) // n:(r + 1) * len(a) // n], arrays)

    return strategy.experimental_distribute_values_from_function(part)


class Stepper:
    """The compiled train and evaluation steps of one (model, optimizer, strategy)."""

    def __init__(self, model, optimizer, strategy, global_batch_size, names):
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.global_batch_size = int(global_batch_size)
        self.names = list(names)

        def replica_step(inputs, targets):
            with tf.GradientTape() as tape:
                outputs = model(inputs, training=True)
                per_output = pose_losses(targets, outputs, self.names, self.global_batch_size)
                loss = tf.reduce_sum(per_output)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return per_output

        @tf.function
        def train_step(inputs, targets):
            per_output = strategy.run(replica_step, args=(inputs, targets))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_output, axis=None)

        def replica_sse(inputs, targets):
            outputs = model(inputs, training=False)
            # Sum of squared errors / 2 per output (not divided by a batch size yet).
            return pose_losses(targets, outputs, self.names, 1)

        @tf.function(reduce_retracing=True)
        def eval_step(inputs, targets):
            per_output = strategy.run(replica_sse, args=(inputs, targets))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_output, axis=None)

        self._train_step, self._eval_step = train_step, eval_step

    def train(self, inputs, targets):
        """One optimizer step on a global batch; returns the per-output losses (numpy)."""
        batch = split_for_replicas(self.strategy, (inputs, targets))
        return np.asarray(self._train_step(*batch))

    def sse(self, inputs, targets):
        """Per-output sum of squared errors / 2 of a batch of any size (numpy)."""
        n = len(inputs["image"])
        if n % self.strategy.num_replicas_in_sync:
            # An uneven tail batch: evaluate it on one device.
            outputs = self.model(inputs, training=False)
            return np.asarray(pose_losses(targets, outputs, self.names, 1))
        batch = split_for_replicas(self.strategy, (inputs, targets))
        return np.asarray(self._eval_step(*batch))
