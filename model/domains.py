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

# The experts (training effects), in the domain classifier's class order.
EXPERT_EFFECTS = (NORMAL, DARK, MOTION_BLUR)
# The test domains: the experts' three plus low resolution, which no expert trains on.
TEST_EFFECTS = EXPERT_EFFECTS + (LOW_RESOLUTION,)
# Every model the evaluation script evaluates.
EVAL_MODELS = EXPERT_EFFECTS + (ENSEMBLE, ENSEMBLE_FUSE)

# File-name spelling (run folders, CSV columns, classifier classes).
EFFECT_NAMES = {NORMAL: "normal", DARK: "dark", MOTION_BLUR: "motion_blur",
                LOW_RESOLUTION: "resolution", ENSEMBLE: "ensemble",
                ENSEMBLE_FUSE: "ensemble_fuse"}
# Reader-facing labels (tables, figures).
DOMAIN_LABELS = {NORMAL: "normal", DARK: "dark", MOTION_BLUR: "motion blur",
                 LOW_RESOLUTION: "low resolution"}
MODEL_LABELS = {NORMAL: "normal expert", DARK: "dark expert",
                MOTION_BLUR: "motion-blur expert", ENSEMBLE: "routed ensemble",
                ENSEMBLE_FUSE: "fused ensemble"}
