"""Everything that depends on the choice of configuration (`--config full` or `small`), in one
place, resolved once.

`full` is CMU's COCO recipe (docs/recipe.md sections 2, 3, 5 and 7): the 52-million-parameter
network on 368 px crops, the main person at 0.6 of the crop, SGD with the Keras
reproduction's step schedule, normal(0.01) initialisation with ImageNet VGG19 where Keras'
file is found, native-resolution single-scale evaluation, and the fork's ResNet-50 domain
classifier on whole images resized to 112 px.

`small` is the CPU recipe that lets the whole experiment run on two cores in minutes: the same
network code at a quarter of the channels, three stages, 184 px crops and 5x5 refinement
convolutions; each choice that departs from `full` is there because the small network
measurably needed it:
- 5x5 instead of CMU's 7x7 in stages 2..: the training step is 21 % faster (273 against 347
  ms at batch 10 on 2 AVX-512 cores, 19 % with AVX2 kernels; benchmarks/bench_layers.py), and
  on the demo's run (6 base epochs, 1 fine-tuning epoch, seed 0) the normal expert's AP on
  the normal set was 0.553 against 0.530 (3x3: 0.527; 160 px crops instead: 0.491);
- main person at 0.9 of the crop: at 0.6 a 184 px crop leaves people about 11 cells tall, at
  0.9 about 16 (synthetic set, 432 steps: AP 0.41 instead of 0.35, each at its best test
  scale); it is therefore evaluated at 1.5 x its crop height ("boxsize" mode), where test
  people have the training size;
- batch normalisation after each hidden convolution during training (folded away in every
  saved weight file) and He-normal initialisation (what "auto" resolves to when no ImageNet
  weights fit): from
  normal(0.01) it stays on the "all background" plateau for hundreds of steps;
- Adam 1e-3 with the same per-layer multipliers and decay, x0.333 after 70 % of the run;
- a network loaded for inference runs frozen, its weights as graph constants: its
  evaluation of the demo's 125 images took 1.5-2.0x less network time with AVX2 kernels
  (1.2x with AVX-512), for about 1 s more to load. The full network keeps Keras' predict
  function: freezing its 52 M weights and the first call took 52 s, more than a photo wins
  back;
- a domain classifier of four strided convolutions ("tiny", 16-64 channels) trained from
  scratch on 64 px crops of a 128 px view: a whole image resized to 64 px shrinks the 30 px
  motion blur to 3-6 px (95 % accuracy with a ResNet-18; 99 % with crops), with a fifth of the
  synthetic train2014 held out to validate it; 40 epochs, the learning rate x0.1 after 30.
  A ResNet-18 (10 epochs, the drop after 7) ended at 97.5-99.2 % with the seed and the
  thread count, on both sides of the demo's 98 % check; the four convolutions ended at
  99.6-100 % on four seeds, in a twentieth of its time per epoch. Its batches are prepared in
  the training process: on 2 cores DataLoader workers compete with torch's threads (an epoch
  of the ResNet-18 took 12 % longer with 2 workers).

Scripts with a `--config` flag take their defaults from `get_recipe(config)`; the classifier's
scripts, which have no `--config`, default to `full`'s classifier (the fork's).
"""
from dataclasses import asdict, dataclass

from model.errors import UserError
from model.network import CONFIGS, PoseConfig


@dataclass(frozen=True)
class ClassifierRecipe:
    """The domain classifier's training recipe (train_domain_classifier/train.py)."""
    arch: str
    input_size: int
    input_mode: str          # "resize" (the fork's whole-image resize) or "crop"
    val_fraction: float      # train2014 images held out to validate the classifier
    epochs: int
    milestones: tuple        # epochs after which the learning rate drops x gamma
    batch_size: int = 32
    workers: int = 2         # DataLoader worker processes (train.py --workers)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    gamma: float = 0.1


@dataclass(frozen=True)
class Recipe:
    """One configuration's choices. `network` is the PoseConfig of the same name."""
    name: str
    target_dist: float       # main person's height / crop size before the random multiplier
    batch_norm: bool         # train with batch normalisation (folded when saved)
    schedule: str            # a name of model.schedules.SCHEDULES
    init: str                # "auto": caffe when initial weights are given or ImageNet VGG19
                             # fits and is found, else he (the small network: always he)
    eval_scale_mode: str     # "native" or "boxsize" (model.inference.SCALE_MODES)
    eval_scale_search: tuple
    frozen_inference: bool   # a network loaded for inference runs with its weights as graph
                             # constants (model.network.freeze_inference)
    classifier: ClassifierRecipe

    @property
    def network(self) -> PoseConfig:
        return CONFIGS[self.name]

    def settings(self):
        """A flat {name: value} for settings tables."""
        out = {k: v for k, v in asdict(self).items() if k != "classifier"}
        out.update({f"classifier_{k}": v for k, v in asdict(self.classifier).items()})
        return out


RECIPES = {
    "full": Recipe(
        "full", target_dist=0.6, batch_norm=False, schedule="keras", init="auto",
        eval_scale_mode="native", eval_scale_search=(1.0,), frozen_inference=False,
        classifier=ClassifierRecipe("resnet50", input_size=112, input_mode="resize",
                                    val_fraction=0.1, epochs=100, milestones=(30, 60))),
    "small": Recipe(
        "small", target_dist=0.9, batch_norm=True, schedule="small", init="auto",
        eval_scale_mode="boxsize", eval_scale_search=(1.5,), frozen_inference=True,
        classifier=ClassifierRecipe("tiny", input_size=64, input_mode="crop",
                                    val_fraction=0.2, epochs=40, milestones=(30,),
                                    workers=0)),
}
# The fork's domain classifier, the default of the classifier's own scripts.
FORK_CLASSIFIER = RECIPES["full"].classifier


def get_recipe(config):
    """The Recipe of a configuration name or PoseConfig. A PoseConfig built in code under
    another name (the tests' tiny networks) follows full's recipe."""
    if isinstance(config, PoseConfig):
        return RECIPES.get(config.name, RECIPES["full"])
    if config not in RECIPES:
        raise UserError(f"unknown configuration {config!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[config]


def per_config(value_of):
    """'full: X, small: Y' for a flag's help text: value_of(recipe) of every recipe."""
    return ", ".join(f"{name}: {value_of(recipe)}" for name, recipe in RECIPES.items())
