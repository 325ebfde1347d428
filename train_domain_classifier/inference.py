"""Loading a trained classifier, validating it and predicting the evaluation sets."""
import logging
import time
from pathlib import Path

import numpy as np
import torch

from model import files, paths
from model.cli import check_data_type
from model.domains import NORMAL
from model.errors import UserError
from model.images import read_image_checked
from model.recipes import FORK_CLASSIFIER
from train_domain_classifier import data, engine, runs
from train_domain_classifier.network import DomainClassifier, load_model_state

log = logging.getLogger("domain_classifier")


def load_classifier(spec, log_dir, arch=None, device="cpu"):
    """(model in eval mode, checkpoint state, path) for a checkpoint file, a run folder or
    None (the newest run in log_dir; a folder gives its best epoch, else its last)."""
    engine.check_device(device)
    path, why = runs.resolve_checkpoint(spec, log_dir, prefer_best=True)
    state = runs.load_checkpoint(path)
    runs.check_arch(state, arch, path)
    model = DomainClassifier(state["arch"])
    load_model_state(model, state["model"], path)
    log.info("checkpoint %s (%s): %s, epoch %s, %s px input, fed %s px images, run seed %s",
             path, why, state["arch"], state.get("epoch"), state.get("input_size"),
             data.eval_size(state), state.get("seed"))
    return model.to(device).eval(), state, path


def validation_dataset(state, coco_root=None, cache_dir=None, workers=0):
    """The validation images of the checkpoint's run (same split rule, seed and fraction)."""
    config = state.get("config", {})
    root = coco_root or config.get("coco_root") or paths.DEFAULT_COCO_ROOT
    refs = data.load_image_refs(root, data.TRAIN_SPLIT)
    # A checkpoint without a recorded fraction was trained with train.py's default.
    val_fraction = config.get("val_fraction", FORK_CLASSIFIER.val_fraction)
    _, val_refs = data.split_images(refs, val_fraction, state.get("seed", 0),
                                    config.get("max_images", 0))
    cache_dir = cache_dir or config.get("cache_dir") or Path(
        config.get("log_dir", paths.DOMAIN_LOG_DIR)) / "cache"
    npy, ok = data.open_cache(val_refs, data.eval_size(state), cache_dir, workers,
                              desc="validation images")
    if not ok.any():
        raise UserError("none of the validation images can be decoded")
    return data.EffectDataset(npy, np.flatnonzero(ok), state["input_size"], train=False,
                              input_mode=data.input_mode(state))


def validate(model, dataset, batch_size=64, workers=0, device="cpu"):
    loader = engine.make_loader(dataset, batch_size, workers)
    return engine.evaluate(model, loader, engine.Dist(device=torch.device(device)))


def write_validation(out_dir, metrics, checkpoint, state):
    """metrics.json, confusion.csv and confusion.png (rows: true class, columns: predicted)."""
    out_dir = Path(out_dir)
    names = list(data.CLASS_NAMES)
    report = dict(metrics, classes=names, checkpoint=str(checkpoint), epoch=state.get("epoch"),
                  arch=state["arch"], input_size=state["input_size"],
                  input_mode=data.input_mode(state), eval_size=data.eval_size(state),
                  seed=state.get("seed"))
    files.write_json(out_dir / "metrics.json", report, indent=1)
    rows = [[f"true_{n}"] + row for n, row in zip(names, metrics["confusion"])]
    files.write_csv(out_dir / "confusion.csv", rows, [""] + [f"pred_{n}" for n in names])
    _confusion_png(out_dir / "confusion.png", np.asarray(metrics["confusion"]), names,
                   f"{Path(checkpoint).name}: accuracy {metrics['accuracy']:.4f}")
    return report


def _confusion_png(path, confusion, names, title):
    # Imported here: ensemble.py, which only predicts, loads this module too.
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(confusion, cmap="Blues")
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(int(v)), ha="center", va="center",
                color="white" if v > confusion.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def eval_set_refs(coco_root, data_type):
    return data.load_image_refs(coco_root, check_data_type(data_type))


class CheckedImageFileDataset(data.ImageFileDataset):
    """data.ImageFileDataset read through model.images.read_image_checked against the
    annotated (width, height): a truncated or wrongly sized file is not ok (same pixels as
    the plain reader for every good file)."""

    def __init__(self, refs, sizes, input_size):
        super().__init__(refs, input_size)
        self.sizes = sizes

    def __getitem__(self, i):
        bgr, _ = read_image_checked(self.refs[i].path, self.sizes[i])
        if bgr is None:
            return torch.zeros(3, self.input_size, self.input_size), i, False
        rgb = data.prepare_image(bgr, NORMAL, self.input_size)
        return data.normalise(torch.from_numpy(rgb).permute(2, 0, 1)), i, True


def _annotated_sizes(coco_root, data_type):
    """({image id: (width, height) or None}, number of images the annotation file lists)."""
    images = files.read_json(paths.annotation_file(coco_root, data_type),
                             "annotation file")["images"]
    sizes = {}
    for im in images:
        w, h = im.get("width"), im.get("height")
        sizes[int(im["id"])] = (int(w), int(h)) if w is not None and h is not None else None
    return sizes, len(images)


def predict_eval_set(model, state, coco_root, data_type, batch_size=64, workers=0,
                     device="cpu"):
    """[{image_id, effect_prob: [p_normal, p_dark, p_motion_blur]}] in annotation order, and
    the number of listed images skipped: missing, undecodable, truncated or of another size
    than annotated."""
    start = time.time()
    refs = eval_set_refs(coco_root, data_type)
    sizes, listed = _annotated_sizes(coco_root, data_type)
    dataset = CheckedImageFileDataset(refs, [sizes.get(r.image_id) for r in refs],
                                      data.eval_size(state))
    loader = engine.make_loader(dataset, batch_size, workers)
    indices, probs, skipped = engine.predict(model, loader, torch.device(device), desc=data_type)
    if skipped:
        first = refs[skipped[0]]
        log.warning("%s: %d of %d images could not be used: skipped (e.g. %s: %s)", data_type,
                    len(skipped), len(refs), first.path,
                    read_image_checked(first.path, sizes.get(first.image_id))[1])
    missing = listed - len(refs)
    if not indices:
        raise UserError(f"none of the {len(refs)} images of {data_type} could be decoded")
    results = [{"image_id": refs[i].image_id, "effect_prob": [round(float(p), 6) for p in row]}
               for i, row in zip(indices, probs)]
    log.info("%s: %d images predicted in %.1f s", data_type, len(results), time.time() - start)
    return results, len(skipped) + missing


def distribution(results):
    """Counts of the most probable class and the mean probabilities."""
    if not results:
        return {"images": 0, "counts": {n: 0 for n in data.CLASS_NAMES}, "mean_prob": []}
    probs = np.array([r["effect_prob"] for r in results])
    counts = np.bincount(probs.argmax(1), minlength=data.NUM_CLASSES)
    return {"images": len(results),
            "counts": {n: int(c) for n, c in zip(data.CLASS_NAMES, counts)},
            "mean_prob": [round(float(v), 4) for v in probs.mean(0)]}
