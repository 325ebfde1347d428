"""Training of one pose expert: CMU's recipe (REFERENCE section 3) in Keras 3, resumable.

Loss: every one of the 2 x num_stages outputs of the training model is already multiplied
by the mask (model.network), and so are the targets (model.pipeline). Per output the loss is
Caffe's EuclideanLoss, sum of squared errors / batch_size / 2; the outputs are summed with
weight 1. Under a distribution strategy each replica divides its own sum by the GLOBAL batch
size; the optimizer sums the replicas' gradients (Keras' tf optimizer all-reduces with SUM),
which gives exactly the gradient of the global batch's loss.

Optimizer: CaffeSGD / CaffeAdam are Keras optimizers whose update_step scales the learning
rate of each variable by its layer's multiplier (model.network.lr_multipliers: backbone and
stage 1 kernels x1, biases x2; stages 2.. x4 / x8) and adds Caffe's weight decay to the
gradient of kernels only (gradient + decay * w; Keras' l2(decay) regulariser would add
2 * decay * w, and its optimizer `weight_decay` is decoupled, AdamW style).

Schedules (SCHEDULES): step policies lr = base_lr * gamma ** floor(iteration / stepsize),
a keras ExponentialDecay with staircase=True driven by the optimizer's iteration counter, so
restoring the optimizer restores the schedule. "caffe" and "keras" are the two published
variants; "small" is the CPU recipe of the small configuration (Adam with the same
multipliers and decay).

Initialisation and batch normalisation: the full configuration follows CMU (normal 0.01,
ImageNet VGG19 in conv1_1..conv4_2 when Keras' file is found). A configuration that no
ImageNet weights fit trains from scratch; there normal(0, 0.01) over 17+ plain ReLU
convolutions starves the signal, so hidden layers get He-normal kernels (resolve_init), and
the small configuration also trains with a BatchNormalization after each hidden convolution
(build_bn_training_model): measured on the synthetic set, without it the network stays on
the "all background" plateau for hundreds of steps. Every weight file is the plain network
all the same: each conv + BN pair is folded into one convolution when it is saved
(fold_batch_norm), so evaluation, ensembles and the Caffe tools never see a BN layer.

The loop is a custom one (not Model.fit) because resuming must be exact at any iteration:
the sample stream is a pure function of the global iteration i (data pass i // P, batch
i % P of that pass, P = full batches per pass; model.pipeline makes a batch a pure function
of (seed, pass, index)), so a run resumed from the state of iteration i sees exactly the
batches an uninterrupted run would have seen. Partial batches are dropped, so every step
has the same batch size (Caffe's normalisation) and one traced graph.

Checkpoints in the output folder (default training/weights<effect>/):
  weights.{epoch:04d}.h5  the network after each epoch, Keras 2 layout by layer name (what
                          the evaluation loads);
  train_state.h5          the latest complete training state: every model variable, every
                          optimizer variable (iteration counter, momenta/moments, loss scale)
                          and a JSON record (epoch, batch within the epoch, iteration, the
                          run's signature, the history of finished epochs, the running sums of
                          the current epoch); written every `save_every` iterations and at the
                          end of each epoch;
  log.csv                 one row per finished epoch (rewritten from the state's history);
  run.json                the arguments and seed of the run; logs/ TensorBoard scalars.
Every file is written to a temporary name and renamed (model.files.atomic_path): a kill at
any moment leaves the previous complete file.
"""
import copy
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model import network, paths
from model.cli import UserError
from model.files import atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

STATE_FILE = "train_state.h5"
LOG_FILE = "log.csv"
RUN_FILE = "run.json"
TENSORBOARD_DIR = "logs"
STATE_VERSION = 1
# Training-time batch normalisation (see build_bn_training_model).
BN_SUFFIX = "_bn"
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3
# Configurations trained with it unless told otherwise: the small one learns from scratch
# (no ImageNet weights fit it) within the few hundred CPU steps of the demo only with it.
DEFAULT_BATCH_NORM = {"full": False, "small": True}
WEIGHT_DECAY = 5e-4
MOMENTUM = 0.9
# Samples per epoch of COCO in the reference trainers (train2014 + val2014 minus 2,645).
COCO_EPOCH_SAMPLES = 121746
DISTRIBUTE = ("none", "mirrored", "multiworker")
CSV_HEADER = ["epoch", "iteration", "lr", "train_loss", "val_loss", "val_loss_last_stage",
              "seconds", "samples_per_s"]


# ------------------------------------------------------------------------------------------
# Schedules

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

    def learning_rate(self, base_lr, batch_size, total_iterations):
        """A float or a keras ExponentialDecay(staircase) = Caffe's "step" policy."""
        import keras
        step = self.stepsize(batch_size, total_iterations)
        if step is None or self.gamma == 1.0:
            return float(base_lr)
        return keras.optimizers.schedules.ExponentialDecay(
            float(base_lr), decay_steps=step, decay_rate=self.gamma, staircase=True)


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
# The schedule a configuration trains with unless --schedule says otherwise.
DEFAULT_SCHEDULE = {"full": "keras", "small": "small"}


def get_schedule(name, config):
    if name in (None, "", "auto"):
        name = DEFAULT_SCHEDULE.get(network.get_config(config).name, "keras")
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


# ------------------------------------------------------------------------------------------
# Optimizers with Caffe's per-layer multipliers and weight decay

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


def _caffe_optimizer(base):
    class CaffeRules(base):
        """`base` whose update_step uses lr * multiplier(variable) and gradient + decay * w
        on kernels (Caffe's Solver::Regularize and the per-blob lr_mult)."""

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
            from keras import ops
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

    CaffeRules.__name__ = CaffeRules.__qualname__ = "Caffe" + base.__name__
    return CaffeRules


_OPTIMIZER_CLASSES = {}


def optimizer_class(kind):
    """CaffeSGD ("sgd") or CaffeAdam ("adam")."""
    import keras
    if kind not in _OPTIMIZER_CLASSES:
        base = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[kind]
        _OPTIMIZER_CLASSES[kind] = _caffe_optimizer(base)
    return _OPTIMIZER_CLASSES[kind]


def make_optimizer(schedule, base_lr=None, batch_size=10, total_iterations=1,
                   mixed_precision=False, weight_decay=None):
    """The Keras optimizer of `schedule` (a Schedule or its name); with mixed precision
    wrapped in keras' LossScaleOptimizer. Create it inside the strategy's scope."""
    import keras
    if isinstance(schedule, str):
        schedule = SCHEDULES[schedule]
    lr = schedule.learning_rate(schedule.base_lr if base_lr is None else base_lr, batch_size,
                                total_iterations)
    decay = schedule.weight_decay if weight_decay is None else weight_decay
    cls = optimizer_class(schedule.optimizer)
    if schedule.optimizer == "sgd":
        opt = cls(learning_rate=lr, momentum=schedule.momentum, caffe_decay=decay)
    else:
        opt = cls(learning_rate=lr, caffe_decay=decay)
    if mixed_precision:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def current_lr(optimizer):
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(np.asarray(lr))


# ------------------------------------------------------------------------------------------
# Loss

def output_names(num_stages):
    """Names of the training model's outputs (and the pipeline's targets), in model order."""
    return [f"stage{s}_L{b}" for s in range(1, num_stages + 1) for b in (1, 2)]


def pose_losses(targets, outputs, names, global_batch_size):
    """Per-output Caffe EuclideanLoss: sum((output - target)^2) / global_batch_size / 2, as a
    float32 vector in the order of `names` (outputs and targets are already masked)."""
    import tensorflow as tf
    losses = [tf.reduce_sum(tf.square(tf.cast(o, tf.float32) - tf.cast(targets[n], tf.float32)))
              for n, o in zip(names, outputs)]
    return tf.stack(losses) / (2.0 * float(global_batch_size))


def pose_loss(targets, outputs, names, global_batch_size):
    """The training loss: the sum of pose_losses (the 12 outputs with weight 1 for full)."""
    import tensorflow as tf
    return tf.reduce_sum(pose_losses(targets, outputs, names, global_batch_size))


# ------------------------------------------------------------------------------------------
# Distribution

def make_strategy(distribute="none", devices=None):
    """tf.distribute strategy: "none" (the default strategy, one device), "mirrored"
    (MirroredStrategy over `devices`, default every visible GPU, else the CPU) or
    "multiworker" (MultiWorkerMirroredStrategy configured by the TF_CONFIG variable)."""
    import tensorflow as tf
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
    import tensorflow as tf
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
        import tensorflow as tf
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


# ------------------------------------------------------------------------------------------
# The sample stream

class BatchStream:
    """Batch i of the run = batch i % P of data pass i // P (P = full batches per pass), read
    ahead by `workers` threads (cv2 and h5py release the GIL). A batch depends on nothing
    but (seed, i), whatever the workers."""

    def __init__(self, batches, workers=1, prefetch=None):
        self.batches = batches
        self.per_pass = len(batches.samples) // batches.batch_size
        if self.per_pass < 1:
            raise UserError(f"batch size {batches.batch_size} is larger than the data "
                            f"({len(batches.samples)} samples)")
        self.workers = max(0, int(workers))
        self.prefetch = prefetch or max(2, 2 * self.workers)
        self._views = {}
        self._pool = ThreadPoolExecutor(self.workers) if self.workers else None
        self._pending = deque()
        self._next = None

    def _view(self, data_pass):
        view = self._views.get(data_pass)
        if view is None:
            # A shallow copy shares the opened samples; set_epoch gives it its own order.
            view = copy.copy(self.batches)
            view.set_epoch(data_pass)
            self._views = {p: v for p, v in self._views.items() if p >= data_pass - 1}
            self._views[data_pass] = view
        return view

    def get(self, i):
        data_pass, index = divmod(int(i), self.per_pass)
        return self._view(data_pass)[index]

    def iterate(self, start, stop):
        """Yield (i, batch) for i in [start, stop)."""
        if self._pool is None:
            for i in range(start, stop):
                yield i, self.get(i)
            return
        self._pending.clear()
        nxt = start
        try:
            while nxt < stop and len(self._pending) < self.prefetch:
                # Views are made in this thread: set_epoch is not thread-safe.
                self._view(nxt // self.per_pass)
                self._pending.append((nxt, self._pool.submit(self.get, nxt)))
                nxt += 1
            while self._pending:
                i, future = self._pending.popleft()
                if nxt < stop:
                    self._view(nxt // self.per_pass)
                    self._pending.append((nxt, self._pool.submit(self.get, nxt)))
                    nxt += 1
                yield i, future.result()
        finally:
            for _, future in self._pending:
                future.cancel()
            self._pending.clear()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------
# Training state

@dataclass
class TrainState:
    """Where a run stands: `epoch` epochs finished, `batch` batches of epoch `epoch` done,
    `iteration` optimizer steps in all."""
    epoch: int = 0
    batch: int = 0
    iteration: int = 0
    signature: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    running: dict = field(default_factory=lambda: {"loss_sum": 0.0, "steps": 0,
                                                   "seconds": 0.0})


def _variables_to_group(group, variables):
    for i, v in enumerate(variables):
        ds = group.create_dataset(str(i), data=np.asarray(v.numpy()))
        ds.attrs["path"] = v.path


def save_state(path, model, optimizer, state):
    """Write the complete training state atomically (model variables, optimizer variables,
    the JSON record)."""
    import h5py
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "pose-train-state"
            f.attrs["version"] = STATE_VERSION
            f.attrs["record"] = json.dumps(asdict(state))
            _variables_to_group(f.create_group("model"), model.weights)
            _variables_to_group(f.create_group("optimizer"), optimizer.variables)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
    return path


def read_state_record(path):
    """The TrainState of a state file without its arrays (UserError if unreadable)."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "pose-train-state":
                raise UserError(f"{path} is not a training state file")
            return TrainState(**json.loads(f.attrs["record"]))
    except OSError as e:
        raise UserError(f"cannot read training state {path}: {e}") from None


def _assign_group(group, variables, what, path):
    if len(group) != len(variables):
        raise UserError(f"training state {path} has {len(group)} {what} variables, this run "
                        f"has {len(variables)}: it was written by another configuration")
    arrays = [group[str(i)][()] for i in range(len(variables))]
    for v, a in zip(variables, arrays):
        if tuple(v.shape) != tuple(a.shape):
            raise UserError(f"training state {path}: {what} variable {v.path} has shape "
                            f"{tuple(a.shape)} in the file, {tuple(v.shape)} in this run")
    for v, a in zip(variables, arrays):
        v.assign(a)


def load_state(path, model, optimizer):
    """Restore model and optimizer variables (the optimizer must be built); returns the
    TrainState."""
    import h5py
    state = read_state_record(path)
    with h5py.File(path, "r") as f:
        _assign_group(f["model"], model.weights, "model", path)
        _assign_group(f["optimizer"], optimizer.variables, "optimizer", path)
    return state


def remove_stale_temporaries(folder):
    """Temporary files of writes that a kill interrupted (model.files.atomic_path names)."""
    removed = 0
    for p in Path(folder).glob(".*.tmp"):
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d unfinished temporary files in %s", removed, folder)
    return removed


def probe_writable(folder):
    """UserError unless a file can really be created in `folder` (root ignores mode bits,
    so os.access alone says yes on a read-only mount)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UserError(f"checkpoint folder {folder} is not writable: "
                        f"{e.strerror or e}") from None
    return folder


# ------------------------------------------------------------------------------------------
# The run

@dataclass
class TrainConfig:
    """Everything a run depends on. `signature()` is what a resumed run must share."""
    config: str = "small"
    effect: str = ""
    epochs: int = 10
    batch_size: int = 10
    schedule: str = "auto"
    lr: float = None
    weight_decay: float = None
    seed: int = 0
    steps_per_epoch: int = 0           # 0: one pass over the training data per epoch
    workers: int = 1
    mixed_precision: bool = False
    distribute: str = "none"
    devices: list = None               # MirroredStrategy devices (default: all GPUs)
    weights: str = None                # initial weights (Keras file, converted CMU, VGG19)
    train_hdf5: str = None
    val_hdf5: str = None
    out_dir: str = None
    save_every: int = 1000             # iterations between mid-epoch states (0: epoch ends)
    resume: bool = True
    augment: bool = True
    init: str = "auto"                 # see resolve_init
    batch_norm: object = "auto"        # True, False or "auto" (see resolve_batch_norm)
    target_dist: float = None          # see augment_params
    tensorboard: bool = True
    progress: bool = True

    def resolved_schedule(self):
        return get_schedule(self.schedule, self.config)

    def signature(self):
        s = self.resolved_schedule()
        return {"config": network.get_config(self.config).name, "effect": self.effect,
                "batch_size": int(self.batch_size), "schedule": s.name,
                "lr": float(s.base_lr if self.lr is None else self.lr),
                "weight_decay": float(s.weight_decay if self.weight_decay is None
                                      else self.weight_decay),
                "seed": int(self.seed), "steps_per_epoch": int(self.steps_per_epoch),
                "mixed_precision": bool(self.mixed_precision), "augment": bool(self.augment),
                "batch_norm": resolve_batch_norm(self.batch_norm, self.config),
                "target_dist": augment_params(self.config, self.target_dist).target_dist,
                "data": data_fingerprint(self.train_hdf5, self.val_hdf5)}


def data_fingerprint(*hdf5_files):
    """A short hash of what the training data was made from: the inputs each HDF5 file records
    (annotation files, split), or its size and time if it records none. A run resumed on rebuilt
    data would mix two datasets, and a finished one would not be retrained."""
    from model.coco_data import stored_params
    parts = []
    for path in hdf5_files:
        if path is None or not Path(path).is_file():
            parts.append(None)
            continue
        st = Path(path).stat()
        parts.append(stored_params(path) or [st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


# Main person's height / crop size before the random scale multiplier, per configuration
# (REFERENCE section 5: 0.6). The small configuration's 184 px crop would leave its people
# only about 11 cells tall at 0.6; at 0.9 they are about 16 (measured on the synthetic set,
# 432 steps: AP 0.41 instead of 0.35, each at its best test scale); evaluate it with
# --scale_mode boxsize --scale_search 1.5 so that test people have the training size.
TARGET_DIST = {"full": 0.6, "small": 0.9}


def augment_params(config, target_dist=None):
    """Augmentation of a configuration: REFERENCE section 5 at its crop size, the main
    person scaled to `target_dist` (default TARGET_DIST of the configuration) of the crop."""
    from model.augment import AugmentParams
    cfg = network.get_config(config)
    if target_dist is None:
        target_dist = TARGET_DIST.get(cfg.name, 0.6)
    return AugmentParams(crop_size=cfg.input_size, target_dist=float(target_dist))


def is_state_file(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "pose-train-state"
    except OSError:
        return False


def load_state_weights(model, path):
    """The model variables of another run's train_state.h5, matched by variable path (all
    of them, batch normalisation included: how an expert warm-starts from another)."""
    import h5py
    with h5py.File(path, "r") as f:
        arrays = {f["model"][k].attrs["path"]: f["model"][k][()] for k in f["model"]}
    pending = []
    for v in model.weights:
        if v.path not in arrays:
            raise UserError(f"training state {path} has no variable {v.path}: it was trained "
                            "with another configuration or batch normalisation setting")
        if tuple(arrays[v.path].shape) != tuple(v.shape):
            raise UserError(f"layer {v.path.split('/')[0]}: training state {path} has "
                            f"{v.path} of shape {tuple(arrays[v.path].shape)}, the model "
                            f"expects {tuple(v.shape)}")
        pending.append((v, arrays[v.path]))
    for v, a in pending:
        v.assign(a)
    log.info("initial weights: %d variables from training state %s", len(pending), path)


def initial_weights(model, path):
    """--weights: ImageNet VGG19 (Keras' notop file, recognised by its block1_conv1 layer),
    another run's train_state.h5, or any Keras weight file by layer name (ours, the
    reproductions', a converted CMU model). Shape mismatches raise UserError naming the
    layer and both shapes."""
    if path is None:
        return
    if is_state_file(path):
        load_state_weights(model, path)
        return
    weights = network.read_weight_file(path)
    if "block1_conv1" in weights and "conv1_1" not in weights:
        network.init_vgg19(model, path)
    else:
        network.load_weights(model, path)


# ------------------------------------------------------------------------------------------
# Training-time batch normalisation, folded away in every exported weight file

def resolve_batch_norm(batch_norm, config):
    """True/False as given; "auto"/None: DEFAULT_BATCH_NORM of the configuration."""
    if batch_norm in (None, "auto"):
        return DEFAULT_BATCH_NORM.get(network.get_config(config).name, False)
    return bool(batch_norm)


_FUSED_BN = []


def fused_batch_norm_class():
    """A Keras layer computing batch normalisation with TensorFlow's fused kernel (3x faster
    than keras.layers.BatchNormalization on CPU, forward and backward, measured on a
    (10, 184, 184, 16) batch); the same variables (gamma, beta, moving_mean,
    moving_variance) and inference-mode function."""
    if _FUSED_BN:
        return _FUSED_BN[0]
    import keras
    import tensorflow as tf

    class FusedBatchNorm(keras.layers.Layer):
        def __init__(self, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs):
            # Variables stay float32 inside the call (the fused kernel wants float32
            # scale and offset also for float16 inputs).
            super().__init__(autocast=False, **kwargs)
            self.momentum, self.epsilon = float(momentum), float(epsilon)

        def build(self, input_shape):
            c = input_shape[-1]
            self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=(c,), initializer="zeros",
                                               name="moving_mean", trainable=False)
            self.moving_variance = self.add_weight(shape=(c,), initializer="ones",
                                                   name="moving_variance", trainable=False)

        def call(self, x, training=False):
            gamma = tf.cast(self.gamma, tf.float32)
            beta = tf.cast(self.beta, tf.float32)
            if training:
                y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                    x, gamma, beta, epsilon=self.epsilon, is_training=True)
                m = self.momentum
                self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
                self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
            else:
                y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                    x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                    variance=tf.cast(self.moving_variance, tf.float32),
                    epsilon=self.epsilon, is_training=False)
            return y

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "momentum": self.momentum,
                    "epsilon": self.epsilon}

    _FUSED_BN.append(FusedBatchNorm)
    return FusedBatchNorm


def build_bn_training_model(config, seed=None, synchronized=False):
    """The training model of `config` (same inputs, outputs and layer names as
    model.network's) with a BatchNormalization (layer <conv>_bn) between every hidden
    convolution and its ReLU. The network at inference is unchanged: fold_batch_norm turns
    each conv + BN pair back into one convolution of the plain model, which is what the
    weight files hold (so the evaluation, the ensembles and the Caffe tools see the same
    network)."""
    import keras

    cfg = network.get_config(config)
    image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    mask = keras.Input((cfg.output_size, cfg.output_size, 1), name="mask")
    t = {"image": keras.layers.Rescaling(1.0 / 256, offset=-0.5, name="normalise")(image)}
    for i, spec in enumerate(network.layer_plan(cfg)):
        ins = [t[n] for n in spec.inputs]
        if spec.kind == "pool":
            t[spec.name] = keras.layers.MaxPooling2D(2, 2, padding="same", name=spec.name)(ins[0])
        elif spec.kind == "concat":
            t[spec.name] = keras.layers.Concatenate(axis=-1, name=spec.name)(ins)
        else:
            init_seed = None if seed is None else seed * 1000 + i
            h = keras.layers.Conv2D(
                spec.filters, spec.kernel, padding="same", name=spec.name,
                kernel_initializer=keras.initializers.RandomNormal(0.0, network.INIT_STD,
                                                                   seed=init_seed),
                bias_initializer="zeros")(ins[0])
            if spec.relu:
                if synchronized:   # statistics over the global batch of all replicas
                    h = keras.layers.BatchNormalization(
                        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True,
                        name=spec.name + BN_SUFFIX)(h)
                else:
                    h = fused_batch_norm_class()(name=spec.name + BN_SUFFIX)(h)
                h = keras.layers.ReLU(name=spec.name + "_relu")(h)
            t[spec.name] = h
    outputs = [keras.layers.Multiply(name=f"stage{s}_L{b}")([t[name], mask])
               for s in range(1, cfg.num_stages + 1)
               for b, name in enumerate(network.output_layer_names(cfg, s), 1)]
    return keras.Model({"image": image, "mask": mask}, outputs,
                       name=f"pose_{cfg.name}_training_bn")


def fold_batch_norm(bn_model, plain_model, config):
    """Copy `bn_model`'s weights into the plain network `plain_model`, each conv + BN pair
    (inference mode: moving statistics) folded into one convolution:
    W' = W s, b' = (b - mean) s + beta with s = gamma / sqrt(var + eps)."""
    for spec in network.conv_layers(config):
        kernel, bias = (np.asarray(v.numpy(), np.float64)
                        for v in bn_model.get_layer(spec.name).weights)
        if spec.relu:
            bn = bn_model.get_layer(spec.name + BN_SUFFIX)
            gamma, beta = np.asarray(bn.gamma.numpy()), np.asarray(bn.beta.numpy())
            mean = np.asarray(bn.moving_mean.numpy())
            var = np.asarray(bn.moving_variance.numpy())
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel = kernel * scale
            bias = (bias - mean) * scale + beta
        plain_model.get_layer(spec.name).set_weights([kernel.astype(np.float32),
                                                      bias.astype(np.float32)])


INITS = ("auto", "caffe", "he")


def he_init(model, config, seed):
    """He-normal kernels (std sqrt(2 / fan_in), seeded per layer) for every hidden convolution;
    the final 1x1 output convolutions keep their normal(0, 0.01) so that the first
    predictions are near zero. For training without ImageNet VGG19: with std 0.01 a stack of
    14+ ReLU convolutions shrinks the signal about tenfold per layer, the features and their
    gradients vanish and the network only learns the background (measured: after 250 steps
    of the small configuration every part heatmap stayed below 0.05)."""
    for i, spec in enumerate(network.conv_layers(config)):
        if not spec.relu:
            continue
        layer = model.get_layer(spec.name)
        std = math.sqrt(2.0 / (spec.kernel * spec.kernel * spec.in_channels))
        rng = np.random.default_rng([int(seed), i])
        layer.kernel.assign(rng.normal(0.0, std, tuple(layer.kernel.shape)).astype(np.float32))


def resolve_init(init, config, weights):
    """"caffe" (normal 0.01 + ImageNet VGG19 when found) or "he"; "auto" = caffe when initial
    weights are given or VGG19 fits and is found, else he."""
    if init not in INITS:
        raise UserError(f"unknown --init {init!r}; choose from {', '.join(INITS)}")
    if init != "auto":
        return init
    if weights is not None:
        return "caffe"
    cfg = network.get_config(config)
    return "caffe" if cfg.width == 1.0 and network.find_vgg19_weights() else "he"


def check_inputs(cfg):
    """Every check that needs no TensorFlow, before anything is built: UserError on bad
    input. Returns (train samples, val samples, out folder)."""
    from model.coco_data import Hdf5Samples
    from model.effects import PIXEL_EFFECTS
    from model.paths import expert_weights_dir

    network.get_config(cfg.config)
    cfg.resolved_schedule()
    resolve_init(cfg.init, cfg.config, cfg.weights)
    if cfg.effect not in PIXEL_EFFECTS or cfg.effect not in paths.EXPERT_EFFECTS:
        raise UserError(f"unknown effect {cfg.effect!r}; choose from {paths.EXPERT_EFFECTS}")
    for name in ("epochs", "batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.steps_per_epoch < 0 or cfg.save_every < 0 or cfg.workers < 0:
        raise UserError("--steps_per_epoch, --save_every and --workers must be >= 0")
    if cfg.lr is not None and not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a positive number, got {cfg.lr}")
    if cfg.distribute not in DISTRIBUTE:
        raise UserError(f"unknown --distribute {cfg.distribute!r}; choose from {DISTRIBUTE}")
    for what, p in (("training", cfg.train_hdf5), ("validation", cfg.val_hdf5)):
        if p is None or not Path(p).is_file():
            raise UserError(f"{what} HDF5 not found: {p} (write it with "
                            "training/generate_hdf5_coco2014.py, or pass --hdf5_dir)")
    train = Hdf5Samples(cfg.train_hdf5)
    val = Hdf5Samples(cfg.val_hdf5)
    if cfg.batch_size > len(train):
        raise UserError(f"--batch_size {cfg.batch_size} is larger than the training data "
                        f"({len(train)} samples in {cfg.train_hdf5})")
    if len(val) == 0:
        raise UserError(f"the validation HDF5 {cfg.val_hdf5} has no samples")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        raise UserError(f"--weights file not found: {cfg.weights}")
    out = Path(cfg.out_dir) if cfg.out_dir else expert_weights_dir(cfg.effect)
    probe_writable(out)
    return train, val, out


def _check_resume(state, cfg, state_path):
    want = cfg.signature()
    # A key the state does not record (written before the key existed) is not compared.
    diff = [f"{k} {state.signature[k]!r} (now {v!r})" for k, v in want.items()
            if k in state.signature and state.signature[k] != v]
    if diff:
        raise UserError(f"{state_path} belongs to another run: " + ", ".join(diff)
                        + "; rerun with the same flags, --resume false to start over, or "
                          "another --out_dir")


def _history_rows(history):
    return [[h[k] for k in CSV_HEADER] for h in history]


def train(cfg, stop_after=None):
    """Train (or resume) one expert; returns a dict with the history and output paths.

    stop_after: stop after that many optimizer steps of this call (tests and benchmarks);
    the state is saved first, so the run resumes from there."""
    t_start = time.time()
    # Bad input is refused before TensorFlow starts (a few seconds).
    train_samples, val_samples, out = check_inputs(cfg)

    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from model.pipeline import PoseBatches

    pcfg = network.get_config(cfg.config)
    schedule = cfg.resolved_schedule()
    names = output_names(pcfg.num_stages)

    strategy = make_strategy(cfg.distribute, cfg.devices)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise UserError(f"--batch_size {cfg.batch_size} does not split evenly over "
                        f"{replicas} replicas")
    chief = is_chief(strategy)

    params = augment_params(pcfg, cfg.target_dist)
    train_batches = PoseBatches(train_samples, cfg.batch_size, cfg.effect, pcfg.num_stages,
                                params, seed=cfg.seed, augment=cfg.augment, shuffle=True)
    val_batches = PoseBatches(val_samples, cfg.batch_size, cfg.effect, pcfg.num_stages,
                              params, seed=cfg.seed, augment=False, shuffle=False)
    stream = BatchStream(train_batches, cfg.workers)
    steps_per_epoch = cfg.steps_per_epoch or stream.per_pass
    total_iterations = steps_per_epoch * cfg.epochs

    state_path = out / STATE_FILE
    state = None
    if chief:
        remove_stale_temporaries(out)
    if cfg.resume and state_path.is_file():
        state = read_state_record(state_path)
        _check_resume(state, cfg, state_path)
        if state.epoch >= cfg.epochs and state.batch == 0:
            log.info("training: already complete (%d of %d epochs) in %s", state.epoch,
                     cfg.epochs, out)
            stream.close()
            return {"history": state.history, "out_dir": out, "state": state,
                    "complete": True}

    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    batch_norm = resolve_batch_norm(cfg.batch_norm, pcfg)
    init = resolve_init(cfg.init, pcfg, cfg.weights)
    try:
        with strategy.scope():
            if batch_norm:
                training_model = build_bn_training_model(pcfg, cfg.seed, replicas > 1)
                if init == "caffe" and cfg.weights is None and pcfg.width == 1.0:
                    network.init_vgg19(training_model)
            else:
                training_model, export_model = network.build_pose_models(
                    pcfg, weights=None, vgg19="auto" if init == "caffe" and cfg.weights is None
                    else None, seed=cfg.seed)
            if init == "he":
                he_init(training_model, pcfg, cfg.seed)
            initial_weights(training_model, cfg.weights)
            # The schedule's stepsize depends on the run's length only for step_fraction
            # schedules; it is part of the state (the optimizer's iteration counter).
            optimizer = make_optimizer(schedule, cfg.lr, cfg.batch_size, total_iterations,
                                       cfg.mixed_precision, cfg.weight_decay)
            optimizer.build(training_model.trainable_variables)
    finally:
        if cfg.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
    if batch_norm:
        # The plain network the weight files describe (float32, outside the strategy).
        export_model = network.build_pose_model(pcfg, vgg19=None)

    def export(path):
        if batch_norm:
            fold_batch_norm(training_model, export_model, pcfg)
        network.save_weights(export_model, path)

    if state is not None:
        state = load_state(state_path, training_model, optimizer)
        log.info("training: resumed from %s at epoch %d, batch %d (iteration %d)", state_path,
                 state.epoch + 1, state.batch, state.iteration)
    else:
        state = TrainState(signature=cfg.signature())
    # With loss scaling, steps whose gradients overflowed are skipped by the optimizer and
    # not counted: only without it must the two counters agree.
    if not cfg.mixed_precision and int(np.asarray(optimizer.iterations)) != state.iteration:
        raise UserError(f"training state {state_path} is inconsistent: optimizer at "
                        f"iteration {int(np.asarray(optimizer.iterations))}, record at "
                        f"{state.iteration}")

    stepper = Stepper(training_model, optimizer, strategy, cfg.batch_size, names)
    if chief:
        write_json(out / RUN_FILE, {**{k: (str(v) if isinstance(v, Path) else v)
                                       for k, v in asdict(cfg).items()},
                                    "signature": cfg.signature(), "schedule_note": schedule.note,
                                    "replicas": replicas, "steps_per_epoch": steps_per_epoch,
                                    "init": init if state.iteration == 0 else "resumed",
                                    "batch_norm": batch_norm,
                                    "keras": keras.__version__, "tensorflow": tf.__version__},
                   indent=1)
    writer = (tf.summary.create_file_writer(str(out / TENSORBOARD_DIR))
              if cfg.tensorboard and chief else None)

    def save(kind):
        if chief:
            save_state(state_path, training_model, optimizer, state)
            log.debug("state saved (%s) at iteration %d", kind, state.iteration)

    log.info("training: start, config %s, effect %r, %d train / %d val samples, batch %d on "
             "%d replica(s), %d steps per epoch, epochs %d..%d, schedule %s (base lr %g), "
             "seed %d, out %s", pcfg.name, cfg.effect, len(train_samples), len(val_samples),
             cfg.batch_size, replicas, steps_per_epoch, state.epoch + 1, cfg.epochs,
             schedule.name, state.signature["lr"], cfg.seed, out)
    steps_this_call = 0
    try:
        while state.epoch < cfg.epochs:
            epoch = state.epoch
            first = epoch * steps_per_epoch + state.batch
            last = (epoch + 1) * steps_per_epoch
            t_epoch = time.time()
            bar = tqdm(total=steps_per_epoch, initial=state.batch, disable=not cfg.progress,
                       desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
            for i, (inputs, targets) in stream.iterate(first, last):
                per_output = stepper.train(inputs, targets)
                loss = float(per_output.sum())
                if not math.isfinite(loss):
                    good = (f"{state_path} (epoch {state.epoch + 1}, batch {state.batch}, "
                            f"iteration {state.iteration})" if state_path.is_file()
                            else "none (no state was saved yet)")
                    raise TrainingDiverged(
                        f"loss is {loss} at iteration {i + 1} (epoch {epoch + 1}, batch "
                        f"{i - epoch * steps_per_epoch + 1}): training stopped; the last "
                        f"good checkpoint is {good}; lower --lr or check the data")
                state.iteration = i + 1
                state.batch = i + 1 - epoch * steps_per_epoch
                state.running["loss_sum"] += loss
                state.running["steps"] += 1
                steps_this_call += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
                if writer is not None and (state.iteration % 10 == 0):
                    with writer.as_default(step=state.iteration):
                        tf.summary.scalar("train/loss", loss)
                        tf.summary.scalar("train/lr", current_lr(optimizer))
                if cfg.save_every and state.iteration % cfg.save_every == 0 \
                        and state.batch < steps_per_epoch:
                    state.running["seconds"] += time.time() - t_epoch
                    t_epoch = time.time()
                    save("periodic")
                if stop_after is not None and steps_this_call >= stop_after \
                        and state.batch < steps_per_epoch:
                    state.running["seconds"] += time.time() - t_epoch
                    save("stop")
                    bar.close()
                    log.info("training: stopped after %d steps at iteration %d (resumable)",
                             steps_this_call, state.iteration)
                    return {"history": state.history, "out_dir": out, "state": state,
                            "complete": False}
            bar.close()

            val_sum, val_n = np.zeros(len(names)), 0
            for b in range(len(val_batches)):
                inputs, targets = val_batches[b]
                val_sum += stepper.sse(inputs, targets)
                val_n += len(inputs["image"])
            val_per_output = val_sum / val_n
            seconds = state.running["seconds"] + time.time() - t_epoch
            row = {"epoch": epoch + 1, "iteration": state.iteration,
                   "lr": current_lr(optimizer),
                   "train_loss": state.running["loss_sum"] / max(1, state.running["steps"]),
                   "val_loss": float(val_per_output.sum()),
                   "val_loss_last_stage": float(val_per_output[-2:].sum()),
                   "seconds": round(seconds, 2),
                   "samples_per_s": round(state.running["steps"] * cfg.batch_size
                                          / max(seconds, 1e-9), 2)}
            if not math.isfinite(row["val_loss"]):
                raise TrainingDiverged(f"validation loss is {row['val_loss']} after epoch "
                                       f"{epoch + 1}: training stopped; lower --lr")
            if chief:
                export(out / f"weights.{epoch + 1:04d}.h5")
            state.history.append(row)
            state.epoch, state.batch = epoch + 1, 0
            state.running = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
            save("epoch")
            if chief:
                write_csv(out / LOG_FILE, _history_rows(state.history), CSV_HEADER)
            if writer is not None:
                with writer.as_default(step=state.iteration):
                    for k in ("train_loss", "val_loss", "val_loss_last_stage", "lr"):
                        tf.summary.scalar(f"epoch/{k}", row[k])
                writer.flush()
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f (last stage %.4f), lr %.3g, "
                     "%.1f s, %.1f samples/s", epoch + 1, cfg.epochs, row["train_loss"],
                     row["val_loss"], row["val_loss_last_stage"], row["lr"], seconds,
                     row["samples_per_s"])
    finally:
        stream.close()
        if writer is not None:
            writer.close()
    log.info("training: end, %d epochs, iteration %d, %.1f s; weights in %s", state.epoch,
             state.iteration, time.time() - t_start, out)
    return {"history": state.history, "out_dir": out, "state": state, "complete": True}


# ------------------------------------------------------------------------------------------
# Throughput (benchmarks/bench_train.py)

def device_description():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                 for g in gpus]
        return f"{len(gpus)} GPU: {', '.join(names)}"
    return f"CPU ({os.cpu_count()} cores visible)"


def time_train_steps(config="full", batch_size=10, steps=5, warmup=1, mixed_precision=False,
                     seed=0, distribute="none"):
    """The model's training step alone, on random inputs of the configuration's crop size:
    {"step_s": median seconds per step, "samples_per_s", "steps", "batch_size"}."""
    import keras

    pcfg = network.get_config(config)
    strategy = make_strategy(distribute)
    keras.utils.set_random_seed(seed)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = network.build_pose_model(pcfg, training=True, vgg19=None, seed=seed)
            opt = make_optimizer(get_schedule("auto", pcfg), None, batch_size, 10 ** 6,
                                 mixed_precision)
            opt.build(model.trainable_variables)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    names = output_names(pcfg.num_stages)
    rng = np.random.default_rng(seed)
    s, g = pcfg.input_size, pcfg.output_size
    inputs = {"image": rng.uniform(0, 255, (batch_size, s, s, 3)).astype(np.float32),
              "mask": np.ones((batch_size, g, g, 1), np.float32)}
    targets = {n: rng.random((batch_size, g, g, network.BRANCH_OUTPUTS[int(n[-1])]),
                             ).astype(np.float32) for n in names}
    stepper = Stepper(model, opt, strategy, batch_size, names)
    for _ in range(max(1, warmup)):      # the first call traces the graph
        stepper.train(inputs, targets)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        stepper.train(inputs, targets)
        times.append(time.perf_counter() - t)
    step = float(np.median(times))
    return {"step_s": step, "samples_per_s": batch_size / step, "steps": steps,
            "batch_size": batch_size, "mixed_precision": bool(mixed_precision),
            "replicas": strategy.num_replicas_in_sync}


def time_pipeline(hdf5, config="full", batch_size=10, batches=10, workers=1, effect="",
                  seed=0):
    """Input pipeline alone (HDF5 -> augmentation -> effect -> targets), read ahead by
    `workers` threads as in training: {"samples_per_s", "batch_s", "batches"}."""
    from model.pipeline import PoseBatches
    pcfg = network.get_config(config)
    data = PoseBatches(hdf5, batch_size, effect, pcfg.num_stages, augment_params(pcfg),
                       seed=seed)
    stream = BatchStream(data, workers)
    try:
        stream.get(0)                     # opens the file, warms caches
        start = time.perf_counter()
        n = 0
        for _, (inputs, _) in stream.iterate(1, 1 + batches):
            n += len(inputs["image"])
        seconds = time.perf_counter() - start
    finally:
        stream.close()
        data.close()
    return {"samples_per_s": n / seconds, "batch_s": seconds / batches, "batches": batches,
            "workers": workers, "batch_size": batch_size}
