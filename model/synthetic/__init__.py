"""Synthetic mini-COCO: articulated people on cluttered backgrounds, in the COCO 2014 layout.

    person.py   the person model: pose, proportions, appearance, joint positions
    render.py   drawing one person (label raster, clothing, face)
    scene.py    one image: background, crowds, people, occluder, camera; its annotations
    dataset.py  the splits on disk, skipped when complete; their statistics
    preview.py  a PNG of the ground truth of the first images

Deterministic for a seed: every image has its own random stream, so a set is byte-identical
whatever the number of worker processes.
"""
from model.synthetic.dataset import (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL,  # noqa: F401
                                     GENERATOR_VERSION, check_arguments, dataset_statistics,
                                     format_statistics, generate_dataset, generate_split,
                                     split_parameters)
from model.synthetic.person import body_geometry, sample_person  # noqa: F401
from model.synthetic.preview import make_preview  # noqa: F401
from model.synthetic.scene import (MAX_SIZE, MIN_SIZE, SPLITS, image_id,  # noqa: F401
                                   line_kernel, render_image)
