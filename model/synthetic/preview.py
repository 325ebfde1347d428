"""The preview of a synthetic split: its first annotated images with the ground truth drawn."""
import math
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from model import paths
from model.draw import coco_annotations_to_people, draw_people
from model.errors import UserError
from model.files import read_json, write_bytes
from model.images import read_image


def make_preview(coco_root, out_path, split="val2014", num_images=6, cell=320, columns=3):
    """A grid of the first images of `split` that hold annotations, ground truth drawn:
    skeletons (occluded parts included), crowd regions outlined in magenta, people with
    num_keypoints=0 boxed in grey. Returns the path written (PNG)."""
    coco_root = Path(coco_root)
    dataset = read_json(paths.annotation_file(coco_root, split), "annotation file")
    by_image = {}
    for ann in dataset["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    chosen = [im for im in dataset["images"] if im["id"] in by_image][:num_images]
    rows = max(1, math.ceil(len(chosen) / columns))
    header = 26
    canvas = np.full((header + rows * cell, columns * cell, 3), 40, np.uint8)
    cv2.putText(canvas, f"{split}: ground truth (skeletons incl. occluded; magenta crowd; "
                        "grey box num_keypoints=0)", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                (230, 230, 230), 1, cv2.LINE_AA)
    for k, im in enumerate(chosen):
        image = read_image(paths.image_dir(coco_root, split) / im["file_name"])
        if image is None:
            raise UserError(f"cannot read image {im['file_name']} of {split}")
        s = min(cell / im["width"], cell / im["height"])
        small = cv2.resize(image, (max(1, round(im["width"] * s)), max(1, round(im["height"] * s))),
                           interpolation=cv2.INTER_AREA)
        anns = by_image[im["id"]]
        people = coco_annotations_to_people(anns)
        people[:, :, :2] = (people[:, :, :2] + 0.5) * s - 0.5      # pixel centres
        small = draw_people(small, people, threshold=0, thickness=2, radius=3)
        for ann in anns:
            if ann["iscrowd"]:
                m = mask_utils.decode(ann["segmentation"])
                m = cv2.resize(m, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(small, contours, -1, (255, 0, 255), 1)
            elif ann["num_keypoints"] == 0:
                x, y, bw, bh = (v * s for v in ann["bbox"])
                cv2.rectangle(small, (int(x), int(y)), (int(x + bw), int(y + bh)),
                              (160, 160, 160), 1)
        cv2.putText(small, str(im["id"]), (4, small.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        y0, x0 = header + r * cell, c * cell
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    ok, buf = cv2.imencode(".png", canvas)
    write_bytes(out_path, buf.tobytes())
    return Path(out_path)
