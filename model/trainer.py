"""Training of one pose expert: CMU's recipe (docs/recipe.md section 3) in Keras 3, resumable.

Trainer.run reads top to bottom: devices and data, then (unless the run in the folder is
already complete) the network and optimizer, the state to resume, and per epoch the training
steps, the validation and the saves. The pieces live beside it: model.train_config (flags and
their checks), model.pipeline (batches and the sample stream), model.batchnorm (the network as
it trains from scratch), model.optim and model.schedules (the optimizer), model.train_step
(loss and distribution), model.state (the files of the output folder).

The loop is a custom one, not Model.fit, because resuming must be exact at any iteration: the
sample stream is a pure function of the global iteration i (model.pipeline.BatchStream), so a
run resumed from the state of iteration i sees exactly the batches an uninterrupted run would
have seen, and the state records the running sums of the epoch it was saved in.
"""
import logging
import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import network
from model.batchnorm import build_bn_training_model, fold_batch_norm, he_init
from model.errors import UserError
from model.files import write_json
from model.optim import current_lr, make_optimizer
from model.pipeline import BatchStream, PoseBatches
from model.state import (LOG_FILE, RUN_FILE, STATE_FILE, TENSORBOARD_DIR, TrainState,
                         check_resume, is_state_file, load_state, load_state_weights,
                         read_state_record, remove_stale_temporaries, save_state, write_log)
from model.train_config import KERAS_POLICIES, check_inputs, resolve_mixed_precision
from model.train_step import (PEER_ERRORS, Stepper, is_chief, make_strategy, output_names,
                              peer_error, sse_step)

log = logging.getLogger(__name__)

# The precision whose optimizer scales the loss (float16's narrow exponent range).
LOSS_SCALED = "float16"
# Training steps between two TensorBoard points of the training loss.
TENSORBOARD_EVERY = 10


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def initial_weights(model, path):
    """--weights: ImageNet VGG19 (Keras' notop file, recognised by its block1_conv1 layer),
    another run's train_state.h5, or any Keras weight file by layer name (ours, the
    reproductions', a converted CMU model). Shape mismatches raise UserError naming the
    layer and both shapes. conv1_1 is converted to the model's input_norm (model.network)
    when the file's differs."""
    if path is None:
        return
    if is_state_file(path):
        load_state_weights(model, path)
        recorded = read_state_record(path).signature.get("input_norm",
                                                         network.DEFAULT_INPUT_NORM)
        conv = model.get_layer("conv1_1")
        converted = network.convert_input_norm({"conv1_1": conv.get_weights()}, recorded,
                                               network.model_input_norm(model))
        conv.set_weights(converted["conv1_1"])
        return
    weights = network.read_weight_file(path)
    if "block1_conv1" in weights and "conv1_1" not in weights:
        network.init_vgg19(model, path)
    else:
        network.load_weights(model, path)


def build_models(plan, seed, weights, synchronized, input_norm=network.DEFAULT_INPUT_NORM):
    """(training model, plain model sharing its layers, or None with batch normalisation),
    with the input layer of `input_norm`, initialised as the plan says and loaded with
    `weights`. Call inside the strategy's scope."""
    pcfg, export_model = plan.network, None
    from_scratch = weights is None
    if plan.batch_norm:
        training_model = build_bn_training_model(pcfg, seed, synchronized, input_norm)
        if plan.init == "caffe" and from_scratch and pcfg.width == 1.0:
            network.init_vgg19(training_model)
    else:
        training_model, export_model = network.build_pose_models(
            pcfg, weights=None, vgg19="auto" if plan.init == "caffe" and from_scratch else None,
            seed=seed, input_norm=input_norm)
    if plan.init == "he":
        he_init(training_model, pcfg, seed)
        network.plain_from_folded_init(training_model)   # He's draw is for the folded form
    initial_weights(training_model, weights)
    return training_model, export_model


def float32_outputs(model):
    """`model` (the same layers and variables) with float32 outputs: under a mixed policy its
    layers compute in float16 or bfloat16, the loss and the callers get float32."""
    outputs = [keras.layers.Activation("linear", dtype="float32", name=f"{name}_float32")(o)
               for name, o in zip(model.output_names, model.outputs)]
    return keras.Model(model.input, outputs, name=model.name)


class Trainer:
    """One run of a TrainConfig: `run()` trains or resumes it to cfg.epochs.

    plan: the RunPlan of check_inputs(cfg) when the caller already checked (None: checked
    here). stop_after: stop after that many optimizer steps of this call (tests and
    benchmarks); the state is saved first, so the run resumes from there."""

    def __init__(self, cfg, plan=None, stop_after=None):
        self.cfg, self.plan, self.stop_after = cfg, plan, stop_after
        self.stream = self.writer = self.state = None
        self.steps_this_call = 0

    def run(self):
        t_start = time.time()
        if self.plan is None:
            self.plan = check_inputs(self.cfg)
        self.state_path = self.plan.out_dir / STATE_FILE
        self.set_up_devices()
        try:
            self.open_data()
            if self.complete_before():
                return self.result(complete=True)
            self.build()
            self.restore()
            self.write_run_file()
            self.log_start()
            while self.state.epoch < self.cfg.epochs:
                if not self.train_epoch():
                    log.info("training: stopped after %d steps at iteration %d (resumable)",
                             self.steps_this_call, self.state.iteration)
                    return self.result(complete=False)
                self.end_epoch(*self.epoch_row(self.validate()))
        finally:
            self.close()
        log.info("training: end, %d epochs, iteration %d, %.1f s; weights in %s",
                 self.state.epoch, self.state.iteration, time.time() - t_start,
                 self.plan.out_dir)
        return self.result(complete=True)

    # -- set-up ----------------------------------------------------------------------------

    def set_up_devices(self):
        cfg = self.cfg
        self.strategy = make_strategy(cfg.distribute, cfg.devices, cfg.collective_timeout)
        self.replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % self.replicas:
            raise UserError(f"--batch_size {cfg.batch_size} does not split evenly over "
                            f"{self.replicas} replicas")
        self.chief = is_chief(self.strategy)

    def open_data(self):
        cfg, plan = self.cfg, self.plan
        stages = plan.network.num_stages
        train_batches = PoseBatches(plan.train_samples, cfg.batch_size, cfg.effect, stages,
                                    plan.augment, seed=cfg.seed, augment=cfg.augment,
                                    shuffle=True)
        self.val_batches = PoseBatches(plan.val_samples, cfg.batch_size, cfg.effect, stages,
                                       plan.augment, seed=cfg.seed, augment=False,
                                       shuffle=False)
        self.stream = BatchStream(train_batches, cfg.workers)
        self.steps_per_epoch = cfg.steps_per_epoch or self.stream.per_pass
        self.total_iterations = self.steps_per_epoch * cfg.epochs

    def complete_before(self):
        """Read the folder's state record (when resuming) and refuse it if it belongs to
        another run; True when it already holds every epoch of this one."""
        if self.chief:
            remove_stale_temporaries(self.plan.out_dir)
        if not (self.cfg.resume and self.state_path.is_file()):
            return False
        self.state = read_state_record(self.state_path)
        if self.state.signature:           # states written before --input_norm were folded
            self.state.signature.setdefault("input_norm", network.DEFAULT_INPUT_NORM)
        check_resume(self.state, self.plan.signature, self.state_path)
        if self.state.epoch >= self.cfg.epochs and self.state.batch == 0:
            log.info("training: already complete (%d of %d epochs) in %s", self.state.epoch,
                     self.cfg.epochs, self.plan.out_dir)
            return True
        return False

    def build(self):
        """The training model, the plain model the weight files hold, the optimizer and the
        compiled steps, seeded by --seed."""
        cfg, plan = self.cfg, self.plan
        keras.utils.set_random_seed(cfg.seed)
        precision = resolve_mixed_precision(cfg.mixed_precision)
        if precision:
            keras.mixed_precision.set_global_policy(KERAS_POLICIES[precision])
        try:
            with self.strategy.scope():
                self.training_model, self.export_model = build_models(
                    plan, cfg.seed, cfg.weights, self.replicas > 1, cfg.input_norm)
                if precision:
                    self.training_model = float32_outputs(self.training_model)
                # The schedule's stepsize depends on the run's length only for step_fraction
                # schedules; it is part of the state (the optimizer's iteration counter).
                self.optimizer = make_optimizer(plan.schedule, cfg.lr, cfg.batch_size,
                                                self.total_iterations,
                                                precision == LOSS_SCALED, cfg.weight_decay)
                self.optimizer.build(self.training_model.trainable_variables)
        finally:
            if precision:
                keras.mixed_precision.set_global_policy("float32")
        names = output_names(plan.network.num_stages)
        self.stepper = Stepper(self.training_model, self.optimizer, self.strategy,
                               cfg.batch_size, names)
        self.val_sse = self.stepper.sse
        if plan.batch_norm:
            # The plain network the weight files describe (float32, outside the strategy),
            # and its training form, which validates once the batch norm is folded in: the
            # batch-norm network's function in inference mode at 0.6 of its time (convolution,
            # bias and ReLU in one kernel). Every worker validates the whole set alike.
            val_model, self.export_model = network.build_pose_models(
                plan.network, vgg19=None, input_norm=cfg.input_norm)
            self.val_sse = sse_step(val_model, tf.distribute.get_strategy(), names)

    def restore(self):
        """Load the state read by complete_before into the model and optimizer, or start a
        new one."""
        if self.state is not None:
            self.state = load_state(self.state_path, self.training_model, self.optimizer)
            log.info("training: resumed from %s at epoch %d, batch %d (iteration %d)",
                     self.state_path, self.state.epoch + 1, self.state.batch,
                     self.state.iteration)
        else:
            self.state = TrainState(signature=self.plan.signature)
        # With loss scaling, steps whose gradients overflowed are skipped by the optimizer and
        # not counted: only without it must the two counters agree.
        iterations = int(np.asarray(self.optimizer.iterations))
        loss_scaled = resolve_mixed_precision(self.cfg.mixed_precision) == LOSS_SCALED
        if not loss_scaled and iterations != self.state.iteration:
            raise UserError(f"training state {self.state_path} is inconsistent: optimizer at "
                            f"iteration {iterations}, record at {self.state.iteration}")

    def write_run_file(self):
        """run.json (the chief's), and the TensorBoard writer."""
        cfg, plan, out = self.cfg, self.plan, self.plan.out_dir
        if self.chief:
            flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
            if cfg.distribute != "multiworker":     # the only runs it applies to
                flags.pop("collective_timeout")
            write_json(out / RUN_FILE, {
                **flags, "signature": plan.signature, "schedule_note": plan.schedule.note,
                "replicas": self.replicas, "steps_per_epoch": self.steps_per_epoch,
                "init": plan.init if self.state.iteration == 0 else "resumed",
                "batch_norm": plan.batch_norm,
                "keras": keras.__version__, "tensorflow": tf.__version__}, indent=1)
        if cfg.tensorboard and self.chief:
            self.writer = tf.summary.create_file_writer(str(out / TENSORBOARD_DIR))

    def log_start(self):
        cfg, plan = self.cfg, self.plan
        log.info("training: start, config %s, effect %r, %d train / %d val samples, batch %d "
                 "on %d replica(s), %d steps per epoch, epochs %d..%d, schedule %s (base lr "
                 "%g), %s, seed %d, out %s", plan.network.name, cfg.effect,
                 len(plan.train_samples), len(plan.val_samples), cfg.batch_size,
                 self.replicas, self.steps_per_epoch, self.state.epoch + 1, cfg.epochs,
                 plan.schedule.name, self.state.signature["lr"],
                 cfg.mixed_precision or "float32", cfg.seed, plan.out_dir)

    # -- one epoch -------------------------------------------------------------------------

    def train_epoch(self):
        """The remaining steps of epoch state.epoch; False when stop_after ended this call
        first (the state is saved: the run resumes from there)."""
        cfg, state, per_epoch = self.cfg, self.state, self.steps_per_epoch
        epoch = state.epoch
        self.t_epoch = time.time()
        with tqdm(total=per_epoch, initial=state.batch, disable=not cfg.progress,
                  desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False) as bar:
            first, last = epoch * per_epoch + state.batch, (epoch + 1) * per_epoch
            for i, (inputs, targets) in self.stream.iterate(first, last):
                loss = self.train_step(i, inputs, targets)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
                self.log_step(loss)
                if state.batch == per_epoch:       # the epoch's end saves the state
                    continue
                if cfg.save_every and state.iteration % cfg.save_every == 0:
                    self.save_within_epoch("periodic")
                if self.stop_after is not None and self.steps_this_call >= self.stop_after:
                    self.save_within_epoch("stop")
                    return False
        return True

    def train_step(self, i, inputs, targets):
        """Optimizer step i of the run (0-based); returns its loss."""
        state, epoch = self.state, self.state.epoch
        try:
            per_output = self.stepper.train(inputs, targets)
        except PEER_ERRORS as e:
            if self.cfg.distribute != "multiworker":
                raise
            raise peer_error(e, self.cfg.collective_timeout) from None
        loss = float(per_output.sum())
        if not math.isfinite(loss):
            good = (f"{self.state_path} (epoch {state.epoch + 1}, batch {state.batch}, "
                    f"iteration {state.iteration})" if self.state_path.is_file()
                    else "none (no state was saved yet)")
            raise TrainingDiverged(
                f"loss is {loss} at iteration {i + 1} (epoch {epoch + 1}, batch "
                f"{i - epoch * self.steps_per_epoch + 1}): training stopped; the last "
                f"good checkpoint is {good}; lower --lr or check the data")
        state.iteration = i + 1
        state.batch = i + 1 - epoch * self.steps_per_epoch
        state.running["loss_sum"] += loss
        state.running["steps"] += 1
        self.steps_this_call += 1
        return loss

    def log_step(self, loss):
        if self.writer is not None and self.state.iteration % TENSORBOARD_EVERY == 0:
            with self.writer.as_default(step=self.state.iteration):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/lr", current_lr(self.optimizer))

    def save_within_epoch(self, kind):
        # The epoch's seconds so far go into the state, so that a resumed epoch's row
        # counts the time of both calls.
        self.state.running["seconds"] += time.time() - self.t_epoch
        self.t_epoch = time.time()
        self.save(kind)

    def save(self, kind):
        if self.chief:
            save_state(self.state_path, self.training_model, self.optimizer, self.state)
            log.debug("state saved (%s) at iteration %d", kind, self.state.iteration)

    def validate(self):
        """Per-output loss of the whole validation set (centre crops), per sample, of the
        network this epoch's weight file holds (with batch normalisation: folded in)."""
        if self.plan.batch_norm:
            fold_batch_norm(self.training_model, self.export_model, self.plan.network)
        val_sum, val_n = np.zeros(len(self.stepper.names)), 0
        # The batches are rendered ahead by the input workers, idle between two epochs.
        calls = (partial(self.val_batches.__getitem__, b) for b in range(len(self.val_batches)))
        for inputs, targets in self.stream.read_ahead(calls):
            try:
                val_sum += self.val_sse(inputs, targets)
            except PEER_ERRORS as e:
                if self.cfg.distribute != "multiworker":
                    raise
                raise peer_error(e, self.cfg.collective_timeout) from None
            val_n += len(inputs["image"])
        return val_sum / val_n

    def epoch_row(self, val_per_output):
        """(the epoch's log.csv row, its seconds unrounded); TrainingDiverged if the
        validation loss is not finite."""
        running = self.state.running
        seconds = running["seconds"] + time.time() - self.t_epoch
        row = {"epoch": self.state.epoch + 1, "iteration": self.state.iteration,
               "lr": current_lr(self.optimizer),
               "train_loss": running["loss_sum"] / max(1, running["steps"]),
               "val_loss": float(val_per_output.sum()),
               "val_loss_last_stage": float(val_per_output[-2:].sum()),
               "seconds": round(seconds, 2),
               "samples_per_s": round(running["steps"] * self.cfg.batch_size
                                      / max(seconds, 1e-9), 2)}
        if not math.isfinite(row["val_loss"]):
            raise TrainingDiverged(f"validation loss is {row['val_loss']} after epoch "
                                   f"{row['epoch']}: training stopped; lower --lr")
        return row, seconds

    def end_epoch(self, row, seconds):
        """The epoch's weight file, state, log.csv row and TensorBoard points."""
        state, out = self.state, self.plan.out_dir
        if self.chief:
            self.export(out / f"weights.{row['epoch']:04d}.h5")
        state.history.append(row)
        state.epoch, state.batch = row["epoch"], 0
        state.running = {"loss_sum": 0.0, "steps": 0, "seconds": 0.0}
        self.save("epoch")
        if self.chief:
            write_log(out / LOG_FILE, state.history)
        if self.writer is not None:
            with self.writer.as_default(step=state.iteration):
                for k in ("train_loss", "val_loss", "val_loss_last_stage", "lr"):
                    tf.summary.scalar(f"epoch/{k}", row[k])
            self.writer.flush()
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f (last stage %.4f), lr %.3g, "
                 "%.1f s, %.1f samples/s", row["epoch"], self.cfg.epochs, row["train_loss"],
                 row["val_loss"], row["val_loss_last_stage"], row["lr"], seconds,
                 row["samples_per_s"])

    def export(self, path):
        """The plain network (batch normalisation folded in) to a weight file; UserError,
        before anything is written, when a weight is not finite (a diverged run would
        otherwise be evaluated as a network that finds nobody). validate() folded the batch
        normalisation in."""
        for layer in self.export_model.layers:
            if not all(np.isfinite(w).all() for w in layer.get_weights()):
                raise UserError(f"training diverged: layer {layer.name} has non-finite "
                                f"weights after epoch {self.state.epoch}; nothing written to "
                                f"{path}")
        network.save_weights(self.export_model, path)

    # -- end -------------------------------------------------------------------------------

    def result(self, complete):
        return {"history": self.state.history, "out_dir": self.plan.out_dir,
                "state": self.state, "complete": complete}

    def close(self):
        if self.stream is not None:
            self.stream.close()
        if self.writer is not None:
            self.writer.close()


def train(cfg, stop_after=None):
    """Train (or resume) one expert; returns a dict with the history and output paths
    ("history", "out_dir", "state", "complete"). See Trainer."""
    return Trainer(cfg, stop_after=stop_after).run()
