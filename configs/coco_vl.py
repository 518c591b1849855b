"""Vision-language MetaLM (paper sizes) on COCO captions, for users with the data prepared.

    tfds build coco_captions --file_format=array_record --data_dir=$DATA   # needs network + TF
    python -m metalm_jax.train --config configs/coco_vl.py --config.data.tfds_data_dir=$DATA

configs/metalm_vl.py with images from COCO captions 2014 (train / val splits, 5 captions per
image) instead of the bundled emoji set; text-only rows still come from data.name.
"""

import os

from metalm_jax.config import load_config_file


def get_config(arg=None):
    here = os.path.dirname(os.path.abspath(__file__))
    c = load_config_file(os.path.join(here, "metalm_vl.py"), arg)
    c.name = "coco_vl"
    c.images.name = "coco_captions"
    c.images.train_split, c.images.validation_split = "train", "val"
    c.images.captions_per_image = 5
    return c
