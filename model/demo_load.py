"""The networks the demo runs, found and loaded with errors that name the demo's own flags:
one pose network on a backend, or the three experts and the domain classifier.

The classifier's torch code (train_domain_classifier) is imported only when the ensemble is
asked for, so the single-network demo never loads torch.
"""
import logging
from pathlib import Path

import numpy as np

from model import backends, network, paths
from model.demo_predict import (DEFAULT_UNCERTAIN_ABOVE, FUSED, ROUTED, ExpertEnsemble,
                                SinglePose)
from model.domains import (DARK, EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, EXPERT_EFFECTS,
                           MOTION_BLUR, NORMAL)
from model.errors import UserError
from model.uncertainty import DEFAULT_MATCH_OKS

log = logging.getLogger("demo")

EXPERT_FLAGS = {NORMAL: "--weights_normal", DARK: "--weights_dark",
                MOTION_BLUR: "--weights_motion_blur"}
ENSEMBLE_METHODS = {ENSEMBLE: ROUTED, ENSEMBLE_FUSE: FUSED}
EXPORT_HINT = ("export one with python -m model.export --config CONFIG --weights W.h5 "
               "--out model.onnx")


def pose_network(backend, config, effect, weights):
    """(model, weights path) of the single-network demo: Keras weights (default: the
    expert of `effect`, model.network.find_weights) or an exported .onnx file."""
    if backend == backends.TENSORFLOW:
        path, note = network.find_weights(effect, weights)
        log.info("weights: %s (%s), config %s", path, note, config)
    else:
        if weights is None:
            raise UserError(f"--backend {backend} runs an exported network: pass --weights "
                            f"FILE.onnx ({EXPORT_HINT})")
        path = Path(weights)
        log.info("%s: %s, config %s", backend, path, config)
    return backends.load_model(backend, config, path), path


def expert_weights(effect, given):
    """The weight file of one expert; UserError naming its flag and how to create it."""
    flag = EXPERT_FLAGS[effect]
    name = EFFECT_NAMES[effect]
    if given is not None:
        if not Path(given).is_file():
            raise UserError(f"{name} expert weights not found: {given} ({flag})")
        return Path(given), f"given with {flag}"
    try:
        return network.find_weights(effect, None)
    except UserError:
        folder = paths.expert_weights_dir(effect)
        raise UserError(
            f"no weights for the {name} expert in {folder} (weights.NNNN.h5): train them "
            f"with python training/train_pose.py --effect '{effect}' (all three: python "
            f"run_experiment.py), or pass {flag} FILE") from None


def load_experts(config, given):
    """The three experts' Keras models (normal, dark, motion blur) and their weight files;
    given: {effect: path or None}. Every file is checked before any is loaded."""
    chosen = [expert_weights(e, given.get(e)) for e in EXPERT_EFFECTS]
    for effect, (path, note) in zip(EXPERT_EFFECTS, chosen):
        log.info("%s expert: %s (%s)", EFFECT_NAMES[effect], path, note)
    return [network.load_pose_model(config, p) for p, _ in chosen], [p for p, _ in chosen]


CLASSIFIER_HINT = ("train one with python train_domain_classifier/train.py (or python "
                   "run_experiment.py), or pass --classifier RUN_FOLDER|model_NNNN.pth")


class DomainClassifier:
    """A trained domain classifier on single BGR images: (3,) probabilities (normal, dark,
    motion blur), each image prepared as train_domain_classifier/ensemble.py prepares the
    evaluation images (model.images pixels, area resize to the checkpoint's eval size,
    ImageNet normalisation)."""

    def __init__(self, spec, log_dir=paths.DOMAIN_LOG_DIR):
        import torch                     # here: only the ensemble needs torch
        from train_domain_classifier import data, inference, runs
        from train_domain_classifier.network import probabilities
        self._torch, self._data, self._probabilities = torch, data, probabilities
        try:
            path, _ = runs.resolve_checkpoint(spec, log_dir, prefer_best=True)
        except UserError as e:
            if spec is None:
                raise UserError(f"no domain classifier: no training run with checkpoints in "
                                f"{log_dir}; {CLASSIFIER_HINT}") from None
            raise UserError(f"domain classifier: {e}; {CLASSIFIER_HINT}") from None
        if not Path(path).is_file():
            raise UserError(f"domain classifier checkpoint not found: {path}; "
                            f"{CLASSIFIER_HINT}")
        self.model, self.state, self.path = inference.load_classifier(path, log_dir)
        self.size = data.eval_size(self.state)

    def __call__(self, image_bgr):
        torch, data = self._torch, self._data
        rgb = data.prepare_image(image_bgr, NORMAL, self.size)
        x = data.normalise(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        with torch.no_grad():
            p = self._probabilities(self.model(x[None]))[0]
        return p.double().numpy()


def build_predictor(effect, settings, config="full", backend="tensorflow", weights=None,
                    experts=None, classifier=None, match_oks=DEFAULT_MATCH_OKS,
                    uncertain_above=DEFAULT_UNCERTAIN_ABOVE, log_dir=paths.DOMAIN_LOG_DIR):
    """The predictor of `effect`: an expert's network alone (NORMAL, DARK, MOTION_BLUR) on
    `backend`, or the routed (ENSEMBLE) / fused (ENSEMBLE_FUSE) ensemble of the three
    experts (experts: {effect: weight file or None}) and the domain classifier."""
    if effect not in ENSEMBLE_METHODS:
        model, _ = pose_network(backend, config, effect, weights)
        return SinglePose(model, settings)
    given = experts or {}
    for e in EXPERT_EFFECTS:         # every missing file is named before anything loads
        expert_weights(e, given.get(e))
    domain = DomainClassifier(classifier, log_dir)
    log.info("domain classifier: %s (%s, %d px)", domain.path, domain.state["arch"],
             domain.size)
    models, _ = load_experts(config, given)
    return ExpertEnsemble(ENSEMBLE_METHODS[effect], domain, models, settings, match_oks,
                          uncertain_above)
