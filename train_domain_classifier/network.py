"""The domain classifier: a ResNet backbone with the fork's head, returning logits.

Head (docs/recipe.md section 7): Dropout(0.5) - Linear(features, 128) - ReLU - Dropout(0.5) -
Linear(128, 3). The network ends with the last Linear: no softmax inside, because
CrossEntropyLoss applies log-softmax itself (the fork's double softmax floored its loss at
about 0.55). Probabilities come from `probabilities(logits)` where they are reported.

Architectures: "resnet50" (the fork's), "resnet18" (the light one for CPU) and "tiny" (four
strided convolutions, no ImageNet weights: the small configuration's, enough to tell the
synthetic demo's domains apart, and the tests').
"""
import logging
from pathlib import Path

import torch
from torch import nn

from model.errors import UserError
from model.torch_compat import torchvision

log = logging.getLogger("domain_classifier")

NUM_CLASSES = 3
HEAD_HIDDEN = 128
DROPOUT = 0.5

_RESNETS = {
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights, 2048),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, 512),
}
TINY_FEATURES = 64
ARCHS = tuple(_RESNETS) + ("tiny",)


def _tiny_backbone():
    layers, channels = [], 3
    for out in (16, 32, 64, TINY_FEATURES):
        layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        channels = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class DomainClassifier(nn.Module):
    def __init__(self, arch):
        super().__init__()
        if arch not in ARCHS:
            raise UserError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
        self.arch = arch
        if arch == "tiny":
            self.backbone, features = _tiny_backbone(), TINY_FEATURES
        else:
            factory, _, features = _RESNETS[arch]
            self.backbone = factory(weights=None)
            self.backbone.fc = nn.Identity()
        self.head = nn.Sequential(
            nn.Dropout(DROPOUT), nn.Linear(features, HEAD_HIDDEN), nn.ReLU(inplace=True),
            nn.Dropout(DROPOUT), nn.Linear(HEAD_HIDDEN, NUM_CLASSES))

    def forward(self, x):
        """(B, 3, H, W) normalised RGB -> (B, 3) logits."""
        return self.head(self.backbone(x))


def probabilities(logits):
    return torch.softmax(logits, dim=1)


def imagenet_weight_file(arch):
    """The torchvision ImageNet file for `arch` in $TORCH_HOME/hub/checkpoints, or None.

    Every published weight version is accepted, the DEFAULT one first."""
    if arch not in _RESNETS:
        return None
    weights_enum = _RESNETS[arch][1]
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    versions = [weights_enum.DEFAULT] + [w for w in weights_enum if w != weights_enum.DEFAULT]
    for w in versions:
        path = directory / Path(w.url).name
        if path.is_file():
            return path
    return None


def expected_weight_file(arch):
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_RESNETS[arch][1].DEFAULT.url).name


def load_backbone_weights(model, path):
    """Load ImageNet (or any torchvision-layout) ResNet weights into the backbone.

    The classification layer fc.* of the file is dropped: the head is new."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pretrained weight file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise UserError(f"cannot read pretrained weights {path}: {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"pretrained weights {path} hold no state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    target = model.backbone.state_dict()
    problems = [k for k, v in state.items()
                if k not in target or tuple(target[k].shape) != tuple(v.shape)]
    # Files saved before BatchNorm counted its batches lack num_batches_tracked; BatchNorm
    # fills it in on load, as torchvision's own loader relies on.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if problems or missing:
        raise UserError(
            f"pretrained weights {path} do not fit arch {model.arch}: "
            f"{len(missing)} backbone tensors missing, {len(problems)} unexpected or of "
            f"another shape (e.g. {(missing + problems)[0]})")
    model.backbone.load_state_dict(state, strict=False)
    return model


def build_classifier(arch, pretrained="auto"):
    """A DomainClassifier; pretrained is "auto" (torchvision file if cached), "none" or a path.

    "auto" without the file warns and keeps the random initialisation."""
    model = DomainClassifier(arch)
    spec = str(pretrained)
    if spec == "none":
        return model
    if spec == "auto":
        if arch == "tiny":
            log.info("arch tiny has no ImageNet weights: random initialisation")
            return model
        path = imagenet_weight_file(arch)
        if path is None:
            log.warning("no ImageNet weights for %s (expected %s): random initialisation; "
                        "give --pretrained PATH, or --pretrained none to silence this",
                        arch, expected_weight_file(arch))
            return model
    else:
        if arch == "tiny":
            raise UserError("arch tiny has no pretrained backbone; use --pretrained none")
        path = Path(spec)
    load_backbone_weights(model, path)
    log.info("backbone %s initialised from %s", arch, path)
    return model


def load_model_state(model, state, source):
    """Load a checkpoint's weights, naming the mismatch instead of torch's long message."""
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        example = (missing + unexpected + shapes)[0]
        raise UserError(f"weights in {source} do not fit arch {model.arch}: {len(missing)} "
                        f"missing, {len(unexpected)} unexpected, {len(shapes)} of another "
                        f"shape (e.g. {example})")
    model.load_state_dict(state)
    return model
