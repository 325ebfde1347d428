"""The image domains and the models evaluated on them, by name.

On the command line the fork spells a domain as an effect suffix: `--effect ""` is the
normal domain, `--effect _dark` the dark one, and the same suffix names the weight folder
(training/weights<effect>) and the evaluation set (val2014_random1k<effect>). Code uses the
constants below instead of the bare strings.
"""
NORMAL = ""
DARK = "_dark"
MOTION_BLUR = "_motion_blur"
LOW_RESOLUTION = "_resolution"
# The two ensembles, evaluated like a fourth and fifth model.
ENSEMBLE = "_ensemble"                # the fork's hard routing by the domain classifier
ENSEMBLE_FUSE = "_ensemble_fuse"      # this project's probability-weighted map fusion
# The two baselines the experts must beat.
MIXED = "_mixed"                      # one generalist network trained on all three domains
NORMAL_GAMMA = "_normal_gamma"        # the normal expert after a test-time gamma correction
# The network every expert and the generalist fine-tune from (normal data; its own folder).
BASE = "_base"

# The experts (training effects), in the domain classifier's class order.
EXPERT_EFFECTS = (NORMAL, DARK, MOTION_BLUR)
# The networks of the AP table that train_pose.py trains, each from the base network.
TRAINED_MODELS = EXPERT_EFFECTS + (MIXED,)
# The test domains: the experts' three plus low resolution, which no expert trains on.
TEST_EFFECTS = EXPERT_EFFECTS + (LOW_RESOLUTION,)
# The baselines the experts must beat: the generalist, and the normal expert's weights with
# model.effects.gamma_correct applied to every image first.
BASELINES = (MIXED, NORMAL_GAMMA)
# Every model the evaluation script evaluates, in the AP table's column order: the experts,
# the ensembles, the baselines.
EVAL_MODELS = EXPERT_EFFECTS + (ENSEMBLE, ENSEMBLE_FUSE) + BASELINES
# The model whose training/weights<effect> folder a model's weights come from, where it is
# another's (model.network.find_weights takes that effect).
WEIGHTS_OF = {NORMAL_GAMMA: NORMAL}

# File-name spelling (run folders, CSV columns, classifier classes).
EFFECT_NAMES = {NORMAL: "normal", DARK: "dark", MOTION_BLUR: "motion_blur",
                LOW_RESOLUTION: "resolution", ENSEMBLE: "ensemble",
                ENSEMBLE_FUSE: "ensemble_fuse", MIXED: "mixed", NORMAL_GAMMA: "normal_gamma",
                BASE: "base"}
# Reader-facing labels (tables, figures).
DOMAIN_LABELS = {NORMAL: "normal", DARK: "dark", MOTION_BLUR: "motion blur",
                 LOW_RESOLUTION: "low resolution"}
MODEL_LABELS = {NORMAL: "normal expert", DARK: "dark expert",
                MOTION_BLUR: "motion-blur expert", ENSEMBLE: "routed ensemble",
                ENSEMBLE_FUSE: "fused ensemble", MIXED: "generalist",
                NORMAL_GAMMA: "normal expert + gamma", BASE: "base network"}


def weights_effect(model):
    """The effect of the weight folder that `model` (an EVAL_MODELS entry) runs."""
    return WEIGHTS_OF.get(model, model)
