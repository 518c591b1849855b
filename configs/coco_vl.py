"""Vision-language MetaLM (paper sizes) on COCO captions, for users with the data prepared.

    tfds build coco_captions --file_format=array_record --data_dir=$DATA   # needs network + TF
    python -m metalm_jax.train --config configs/coco_vl.py --config.data.tfds_data_dir=$DATA

configs/metalm_vl.py with images from COCO captions 2014 (train / val splits, 5 captions per
image) instead of the bundled emoji set; text-only rows still come from data.name.
"""

import importlib.util
import os


def get_config(arg=None):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metalm_vl.py")
    spec = importlib.util.spec_from_file_location("metalm_vl", path)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    c = base.get_config(arg)
    c.name = "coco_vl"
    c.images.name = "coco_captions"
    c.images.train_split, c.images.validation_split = "train", "val"
    c.images.captions_per_image = 5
    return c
