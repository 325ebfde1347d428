"""A whole evaluation set through the networks: batched, pipelined, interruptible.

predict_dataset runs three stages side by side, joined by bounded queues: a loader thread
reads, checks and preprocesses the images (model.images' reader, so a truncated file or one
whose size differs from its annotation is skipped with its reason), the calling thread batches
the inputs through the networks (model.inference.run_network), a decoder thread averages each
image's maps on its working grid and decodes its people (model.inference.decode_maps). A first
SIGINT or SIGTERM only sets a flag (model.cli.deferred_signals) that every stage checks: the
threads are stopped and joined and the caller gets what was decoded, to save before it exits.
"""
import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model import decode, inference
from model.cli import deferred_signals, raise_deferred_signal
from model.images import read_image_checked

log = logging.getLogger(__name__)

_DONE = object()
_POLL_S = 0.1    # how often a waiting stage checks for a stop, a dead peer or a signal


def read_image_or_reason(path):
    """(BGR uint8 image, None) or (None, "<reason>: <path>") for one image file, read and
    checked by model.images.read_image_checked: a missing, truncated or undecodable file is
    named with the same reason text as in an evaluation set (read_set_image)."""
    return read_set_image(path, {})


def read_set_image(path, image_info):
    """(BGR uint8 image, None) or (None, "<reason>: <path>") for an image of an evaluation
    set: read by model.images.read_image_checked, so a truncated file, or one whose size
    differs from the annotation's width and height (when the image dict has them), is
    refused instead of predicted on its grey remainder."""
    path = Path(path)
    size = ((int(image_info["width"]), int(image_info["height"]))
            if "width" in image_info and "height" in image_info else None)
    image, reason = read_image_checked(path, size)
    return (image, None) if image is not None else (None, f"{reason}: {path}")


class _Worker(threading.Thread):
    """A daemon thread whose exception is re-raised by `check()` in the caller's thread."""

    def __init__(self, target, name):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self):
        try:
            self._target_fn()
        except BaseException as e:  # handed to the main thread
            self.error = e

    def check(self):
        if self.error is not None:
            raise self.error


def _per_image_weights(models, weights):
    """(models, weights_of): weights_of(image_id) gives the normalised model weights of an
    image, from fixed weights (default equal) or a function of the image id."""
    if callable(weights):
        models = inference.as_models(models, None)[0]
        return models, lambda image_id: inference.as_models(models, weights(image_id))[1]
    models, fixed = inference.as_models(models, weights)
    return models, lambda image_id: fixed


def _largest_first(images):
    """Images in order of decreasing size (then id): equal-sized inputs follow each other, so
    the network's batches fill."""
    return sorted(images, key=lambda im: (-int(im.get("height", 0)), -int(im.get("width", 0)),
                                          int(im["id"])))


class _SetPrediction:
    """One predict_dataset call. Three stages run side by side, joined by bounded queues:
    the loader thread reads and preprocesses images (load), the calling thread batches the
    inputs through the network (add_image, flush), the decoder thread averages each image's
    maps and decodes its people once all of them have arrived (decode_all)."""

    def __init__(self, models, weights_of, image_dir, settings, batch_size, checkpoint,
                 checkpoint_every, preprocess=None):
        self.models, self.weights_of = models, weights_of
        self.preprocess = preprocess
        self.image_dir, self.settings, self.batch_size = Path(image_dir), settings, batch_size
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.loaded = queue.Queue(maxsize=2 * batch_size)
        self.outputs = queue.Queue(maxsize=4 * batch_size)
        self.records, self.predicted, self.skipped = [], [], []
        self.accumulators = {}     # image id -> its Accumulator, until its last map arrives
        self.pending = []          # (image_id, image_hw, scale, flipped, input, model weights)
        self.network_seconds = 0.0
        self.start = time.perf_counter()
        self.decoder = None

    def load(self, order):
        """Loader thread: every image of `order` as an ("image", ...) or ("skip", ...) item;
        returns early once the run is stopped."""
        for im in order:
            if self.stop.is_set():
                return
            image, reason = read_set_image(self.image_dir / im["file_name"], im)
            if image is None:
                item = ("skip", int(im["id"]), reason)
            else:
                if self.preprocess is not None:
                    image = self.preprocess(image)
                item = ("image", int(im["id"]), image.shape[:2],
                        inference.network_inputs(image, self.settings))
            if not _offer(self.loaded, item, self.stop):
                return
        _offer(self.loaded, _DONE, self.stop)

    def decode_all(self):
        """Decoder thread: add each network output to its image's accumulator; decode an image
        when its accumulator is complete. Returns at _DONE, or once the run is stopped (after
        the image it is decoding: records and predicted stay consistent)."""
        while True:
            item = _take(self.outputs, self.stop)
            if item is _DONE:
                return
            image_id, image_hw, paf, heat, scale, flipped, weight = item
            acc = self.accumulators[image_id]
            if acc.add(paf, heat, scale, flipped, weight):
                del self.accumulators[image_id]
                people = inference.decode_maps(acc.heat, acc.paf, image_hw, self.settings)
                self.records.extend(decode.people_to_coco(people, image_id))
                self.predicted.append(image_id)
                if (self.checkpoint is not None
                        and len(self.predicted) % self.checkpoint_every == 0):
                    self.checkpoint(list(self.records), list(self.predicted),
                                    time.perf_counter() - self.start)

    def add_image(self, image_id, image_hw, inputs):
        """Queue one image's inputs for the network; a batch holds inputs of one shape."""
        w = self.weights_of(image_id)
        self.accumulators[image_id] = inference.Accumulator(image_hw, self.settings.resolution,
                                                   len(inputs) * int((w > 0).sum()))
        for scale, flipped, batch_input in inputs:
            if self.pending and (self.pending[0][4].shape != batch_input.shape
                                 or len(self.pending) >= self.batch_size):
                self.flush()
            self.pending.append((image_id, image_hw, scale, flipped, batch_input,
                                 w / len(inputs)))

    def flush(self):
        """Run every model on the pending inputs it has a weight for; hand the outputs to the
        decoder."""
        for m, model in enumerate(self.models):
            members = [p for p in self.pending if p[5][m] > 0]
            if not members:
                continue
            t0 = time.perf_counter()
            paf, heat = inference.run_network(model, np.stack([p[4] for p in members]))
            self.network_seconds += time.perf_counter() - t0
            for k, (image_id, image_hw, scale, flipped, _, w) in enumerate(members):
                _put(self.outputs, (image_id, image_hw, paf[k], heat[k], scale, flipped, w[m]),
                     self.decoder)
        self.pending.clear()

    def run(self, order, progress):
        """Run the three stages. A signal (SIGINT, SIGTERM) is deferred to the points where
        the calling thread checks for it (model.cli.deferred_signals); on it, or on any
        error, the workers are stopped and joined before the exception goes on (a daemon
        thread still inside OpenCV when the interpreter exits aborts the process: "FATAL:
        exception not rethrown"), and what was decoded is checkpointed."""
        self.stop = threading.Event()
        loader = _Worker(lambda: self.load(order), "loader")
        self.decoder = _Worker(self.decode_all, "decoder")
        with deferred_signals():
            try:
                self._feed(loader, len(order), progress)
                raise_deferred_signal()      # one that came during the last batch
            except BaseException:
                self._abandon(loader)
                raise
        loader.check()

    def _feed(self, loader, total, progress):
        """The calling thread's part: batch the loaded inputs through the network, hand the
        end to the decoder and wait for it."""
        loader.start()
        self.decoder.start()
        bar = tqdm(total=total, desc="predict", unit="img", disable=not progress)
        try:
            while True:
                raise_deferred_signal()
                item = _get(self.loaded, loader)
                if item is _DONE:
                    break
                bar.update(1)
                if item[0] == "skip":
                    self.skipped.append((item[1], item[2]))
                    log.warning("skipped image %d: %s", item[1], item[2])
                    continue
                self.add_image(*item[1:])
            if self.pending:
                self.flush()
            _put(self.outputs, _DONE, self.decoder)
            while self.decoder.is_alive():     # not join(): signals are checked meanwhile
                self.decoder.join(timeout=_POLL_S)
                raise_deferred_signal()
            self.decoder.check()
        finally:
            bar.close()

    def _abandon(self, loader):
        """Stop and join the workers, then checkpoint the images decoded so far."""
        self.stop.set()
        for worker in (loader, self.decoder):
            if worker.is_alive():
                worker.join()
        if self.checkpoint is None or not self.predicted:
            return
        try:
            self.checkpoint(list(self.records), list(self.predicted),
                            time.perf_counter() - self.start)
        except Exception as e:  # the original exception matters more; say what was lost
            log.warning("could not save the %d images predicted so far: %s",
                        len(self.predicted), e)


def predict_dataset(models, images, image_dir, settings=inference.InferenceSettings(), weights=None,
                    batch_size=4, progress=True, checkpoint=None, checkpoint_every=25,
                    preprocess=None):
    """COCO keypoint records of every image of `images` (COCO image dicts: id, file_name,
    optional width/height) read from image_dir.

    Pipelined: a loader thread reads and preprocesses images while the network runs on
    batches of equal-sized inputs (images are taken in order of their size so that batches
    fill), and a decoder thread resamples, averages and decodes the maps beside it.

    weights: one weight per model for every image (default equal), or a function of the
    image id giving that image's weights (the fused ensemble's domain probabilities); a model
    whose weight is 0 for every image of a batch does not run on it.

    checkpoint(records, image_ids, seconds), when given, is called from the decoder thread
    with copies of the results so far every `checkpoint_every` images (to save them for a
    resumed run).

    preprocess(image) -> image, when given, replaces every image as read (BGR uint8) before
    the network sees it, in the loader thread (a test-time correction such as
    model.effects.gamma_correct); it must keep the image's size.

    Returns (records sorted by image id, info) with info = {"image_ids": predicted ids,
    "skipped": [(id, reason)], "seconds": wall time, "network_seconds": time in the network}."""
    models, weights_of = _per_image_weights(models, weights)
    batch_size = max(1, int(batch_size))
    order = _largest_first(images)
    run = _SetPrediction(models, weights_of, image_dir, settings, batch_size, checkpoint,
                         checkpoint_every, preprocess)
    run.run(order, progress)
    records = run.records
    records.sort(key=lambda r: (r["image_id"], -r["score"]))
    info = {"image_ids": sorted(run.predicted), "skipped": run.skipped,
            "seconds": time.perf_counter() - run.start, "network_seconds": run.network_seconds}
    return records, info


def _get(q, worker):
    """q.get() that notices a dead producer instead of waiting forever, and a deferred
    signal (model.cli.deferred_signals) while it waits."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            raise_deferred_signal()
            worker.check()
            if not worker.is_alive():
                return q.get_nowait() if not q.empty() else _DONE


def _put(q, item, worker):
    """q.put() that notices a dead consumer instead of waiting forever, and a deferred
    signal while it waits."""
    while True:
        try:
            return q.put(item, timeout=_POLL_S)
        except queue.Full:
            raise_deferred_signal()
            worker.check()


def _take(q, stop):
    """A worker's q.get(): _DONE once `stop` is set."""
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            pass
    return _DONE


def _offer(q, item, stop):
    """A worker's q.put(): False (item dropped) once `stop` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            pass
    return False


# ------------------------------------------------------------------------------ demo output
