"""Host CPU time and bytes per image, uint8 pixels against the float32 normalization the host
did before pixels travelled as uint8 (issue 21, item 4):

    python benchmarks/image_host_cost.py [--size 224] [--reps 50]

One random-noise PNG of 320 x 256 (noise: the slowest to decode) through data/images.preprocess
(decode, bicubic resize, center crop -> uint8), and the same plus the removed host normalization
((x / 255 - mean) / std in float32, now done by the vision encoder on the device). Process CPU
time per image, interleaved, median of 7 rounds. Used for benchmarks/RESULTS.md.
"""

import argparse
import io
import time

import numpy as np
import PIL.Image

from metalm_jax.data import images


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=50)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    mean = np.asarray(images.CLIP_MEAN, np.float32)
    std = np.asarray(images.CLIP_STD, np.float32)

    def uint8():
        return images.preprocess(data, a.size, record_id="noise.png")

    def float32():  # what preprocess returned before
        return (np.asarray(uint8(), np.float32) / 255.0 - mean) / std

    times = {uint8: [], float32: []}
    for _ in range(7):
        for f, out in times.items():
            t = time.process_time()
            for _ in range(a.reps):
                f()
            out.append((time.process_time() - t) / a.reps)
    for f, out in times.items():
        ms = float(np.median(out)) * 1e3
        print(f"{f.__name__}: {ms:.2f} ms CPU per image, {f().nbytes:,} bytes per image")


if __name__ == "__main__":
    main()
