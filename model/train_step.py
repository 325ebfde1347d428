"""One optimizer step of the pose loss, on one device or split over a tf.distribute strategy.

Loss: every one of the 2 x num_stages outputs of the training model is already multiplied by
the mask (model.network), and so are the targets (model.pipeline). Per output the loss is
Caffe's EuclideanLoss, sum of squared errors / batch_size / 2; the outputs are summed with
weight 1 (docs/recipe.md section 3). Under a distribution strategy each replica divides its
own sum by the GLOBAL batch size; the optimizer sums the replicas' gradients (Keras' tf
optimizer all-reduces with SUM), which gives exactly the gradient of the global batch's loss.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy

from model.errors import UserError
from model.train_config import DISTRIBUTE, check_tf_config


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


# What a collective raises when a peer stopped, cannot be reached or timed out (the health
# check aborts the collectives with UnavailableError; a stuck one ends in DeadlineExceeded).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
               tf.errors.CancelledError, tf.errors.AbortedError, tf.errors.InternalError,
               tf.errors.FailedPreconditionError)


def make_strategy(distribute="none", devices=None, timeout=300.0):
    """tf.distribute strategy: "none" (the default strategy, one device), "mirrored"
    (MirroredStrategy over `devices`, default every visible GPU, else the CPU) or
    "multiworker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG variable).

    multiworker never waits forever: the workers must all be up within `timeout` seconds, every
    all-reduce must complete within it (tf.distribute's CommunicationOptions), and TensorFlow's
    health check probes every peer each min(30, timeout / 4) s, aborting the collectives of the
    survivors when one is gone; either ends in a UserError naming the cluster."""
    if distribute == "none":
        return tf.distribute.get_strategy()
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if distribute == "multiworker":
        tf_config = check_tf_config(os.environ.get("TF_CONFIG"))
        # The health check's settings are class attributes (tf.distribute has no argument).
        extended = collective_all_reduce_strategy.CollectiveAllReduceExtended
        extended._check_health_initial_timeout = max(1, int(timeout))
        extended._check_health_interval = max(1.0, min(30.0, timeout / 4))
        extended._check_health_timeout = max(1, min(10, int(timeout / 4)))
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
        message = (f"the multi-worker cluster {cluster_text(tf_config)} was not complete "
                   f"within --collective_timeout {timeout:g} s")
        # TensorFlow's own wait can outlast its timeout (a peer that never answers keeps the
        # device resolution retrying): a watchdog ends the process with the one line then.
        with watchdog(timeout + 5, f"error: {message} (is every worker started, and are "
                                   "the TF_CONFIG addresses reachable?)"):
            try:
                return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
            except (RuntimeError, *PEER_ERRORS) as e:
                raise UserError(f"{message}: {first_line(e)}") from None
    raise UserError(f"unknown --distribute {distribute!r}; choose from {', '.join(DISTRIBUTE)}")


# The watchdog process: waits on its stdin (closed by the parent when the block ends, or by
# the kernel when the parent dies); after the timeout it writes the line and kills the parent.
_WATCHDOG = ("import os, select, signal, sys\n"
             "if not select.select([sys.stdin], [], [], float(sys.argv[2]))[0]:\n"
             "    sys.stderr.write(sys.argv[3] + '\\n'); sys.stderr.flush()\n"
             "    os.kill(int(sys.argv[1]), signal.SIGKILL)\n")


@contextlib.contextmanager
def watchdog(seconds, line):
    """Unless the block ends within `seconds`, write `line` to stderr and kill this process
    (SIGKILL: status 137). A separate process, because TensorFlow holds the GIL while it
    waits for its cluster, so no thread or signal handler of this one would run."""
    guard = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()),
                              str(seconds), line], stdin=subprocess.PIPE)
    try:
        yield
    finally:
        guard.stdin.close()
        guard.wait()


def cluster_text(tf_config):
    return ", ".join(f"{job} {', '.join(tasks)}" for job, tasks in tf_config["cluster"].items())


def first_line(error):
    text = getattr(error, "message", None) or str(error)
    return (text.strip().splitlines() or [type(error).__name__])[0][:300]


def peer_error(error, timeout):
    """The UserError of a collective that failed because a peer is gone or timed out."""
    tf_config = check_tf_config(os.environ.get("TF_CONFIG"))
    return UserError(f"multi-worker training stopped: a worker of {cluster_text(tf_config)} "
                     f"stopped or did not answer within {timeout:g} s "
                     f"({type(error).__name__}: {first_line(error)})")


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
    """The compiled train and evaluation steps of one (model, optimizer, strategy).

    jit_compile: compile the train step with XLA (tf.function(jit_compile=True)); off by
    default, since the first step then compiles for a long time and every new batch shape
    compiles again."""

    def __init__(self, model, optimizer, strategy, global_batch_size, names, jit_compile=False):
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

        # None (not False) without XLA: TensorFlow's own default, a plain @tf.function.
        @tf.function(jit_compile=True if jit_compile else None)
        def train_step(inputs, targets):
            per_output = strategy.run(replica_step, args=(inputs, targets))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_output, axis=None)

        self._train_step = train_step
        self.sse = sse_step(model, strategy, self.names)

    def train(self, inputs, targets):
        """One optimizer step on a global batch; returns the per-output losses (numpy)."""
        batch = split_for_replicas(self.strategy, (inputs, targets))
        return np.asarray(self._train_step(*batch))


def sse_step(model, strategy, names):
    """sse(inputs, targets): `model`'s per-output sum of squared errors / 2 (not divided by a
    batch size) of a batch of any size, in inference mode, over the replicas of `strategy`
    (numpy)."""
    def replica_sse(inputs, targets):
        return pose_losses(targets, model(inputs, training=False), names, 1)

    @tf.function(reduce_retracing=True)
    def eval_step(inputs, targets):
        per_output = strategy.run(replica_sse, args=(inputs, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_output, axis=None)

    def sse(inputs, targets):
        if len(inputs["image"]) % strategy.num_replicas_in_sync:
            # An uneven tail batch: evaluate it on one device.
            return np.asarray(pose_losses(targets, model(inputs, training=False), names, 1))
        return np.asarray(eval_step(*split_for_replicas(strategy, (inputs, targets))))

    return sse
