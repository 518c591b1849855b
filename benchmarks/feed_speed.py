"""Prepared data, both sides (issue 21 §7): how fast `prepare` writes rows, and how many rows per
CPU-second the training side's worker processes build, for metalm_lm and metalm_vl.

    JAX_PLATFORMS=cpu python benchmarks/feed_speed.py                      # everything
    JAX_PLATFORMS=cpu python benchmarks/feed_speed.py --seconds 10 --workers 0 1 2

Data (bundled, offline): --copies copies of the KJV (1,189 chapters, ~1M tokens each) as one
.jsonl per 100 chapters, and --images OpenMoji emojis rendered at 224 px as webdataset .tar
shards of 250 (img2dataset's
layout: key.jpg, key.txt, key.json; `testing.write_emoji_webdataset`), under --workdir.

Prepare: `prepare.prepare` with the config's data keys at `--prepare-workers` processes (the
tokenizer trained beforehand, untimed), timed whole (wall: spawning the workers included) and
per worker from the manifest's `shard_seconds` (each worker times its own shards): tokens/s and
images/s per worker. metalm_lm prepares the text; metalm_vl the text and the images.

Training side: `pipeline.prepared_batches` with the host's batch (global batch / 16 hosts of a
v5p-128) read through `StepIterator` with 0 (grain threads in this process), 1 and 2 worker
processes; batches pulled for --warmup s, then for --seconds s, timed. CPU time is this
process's and every worker's (from /proc, before they stop), so rows per CPU-second counts the
whole work; rows/s (wall) shows the scaling with workers on this 2-core machine; the main
process's own CPU per row (receiving the batches) bounds one host's rate whatever the workers.

Overrides (printed): data.vocab_size 8,192 (the paper vocabularies cannot be trained on the
KJV; SentencePiece speed hardly depends on it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import resource
import shutil
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(HERE, "..", "configs")
HOSTS = 16  # v5p-128: 64 chips, 4 per host
CLK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """utime + stime of a process, seconds (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return 0.0


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load(name: str, workdir: str, images: bool):
    from metalm_jax.config import load_config_file

    cfg = load_config_file(os.path.normpath(os.path.join(CONFIGS, f"{name}.py")))
    with cfg.unlocked():
        cfg.data.vocab_size = 8192
        cfg.data.name = "files"
        cfg.data.files = os.path.join(workdir, "kjv", "*.jsonl")
        cfg.data.prepared_dir = os.path.join(workdir, f"prepared_{name}")
        cfg.data.tfds_data_dir = os.path.join(workdir, "tfds")
        if images:
            cfg.images.name = "files"
            cfg.images.files = os.path.join(workdir, "wds", "*.tar")
    return cfg


def write_data(workdir: str, n_images: int, copies: int) -> None:
    from metalm_jax import testing
    from metalm_jax.data.corpora.text import kjv_chapters

    kjv = os.path.join(workdir, "kjv")
    if not os.path.isdir(kjv):
        os.makedirs(kjv)
        chapters = list(kjv_chapters())
        for c, k in itertools.product(range(copies), range(0, len(chapters), 100)):
            name = os.path.join(kjv, f"{c:02d}-{k // 100:02d}.jsonl")
            with open(name, "w", encoding="utf-8") as f:
                for _, verses in chapters[k : k + 100]:
                    f.write(json.dumps({"text": "\n".join(verses)}) + "\n")
    wds = os.path.join(workdir, "wds")
    if n_images and not os.path.isdir(wds):
        testing.write_emoji_webdataset(wds, shards=max(1, n_images // 250), per_shard=250, size=224)


def tokenizer(cfg, workdir: str, name: str, images: bool) -> str:
    """The config's SentencePiece, trained once (not timed) as prepare would train it."""
    from metalm_jax.data.corpora import sources
    from metalm_jax.data.feed import prepare

    out = os.path.join(workdir, f"tokenizer_{name}")
    os.makedirs(out, exist_ok=True)
    files = sources.expand_paths(cfg.data.files, "data.files")
    image_files = sources.expand_paths(cfg.images.files, "images.files") if images else ()
    return prepare.prepare_tokenizer(cfg, out, files, (0, 1), print, image_files)


def measure_prepare(cfg, workers: int, layout) -> dict:
    from metalm_jax.data.feed import prepare

    shutil.rmtree(cfg.data.prepared_dir, ignore_errors=True)
    t0, c0, k0 = time.perf_counter(), _self_cpu(), _children_cpu()
    m = prepare.prepare(cfg, workers=workers, log=lambda line: None, layout=layout)
    wall = time.perf_counter() - t0
    cpu = _self_cpu() - c0 + _children_cpu() - k0
    tokens = sum(m["splits"][s]["tokens"] for s in ("train", "validation"))
    pairs = ("images_train", "images_validation")
    images = sum(m["splits"].get(s, {}).get("documents", 0) for s in pairs)
    seconds = m["shard_seconds"]
    return {
        "wall": wall,
        "cpu": cpu,
        "tokens": tokens,
        "images": images,
        "workers": workers,
        # one worker's own rate: the work over the seconds its shards took (their sum)
        "tokens_per_worker_s": tokens / seconds["text"]["wall"],
        "images_per_worker_s": images / seconds["images"]["wall"] if images else 0.0,
    }


def measure_reading(cfg, workers: int, warmup: float, seconds: float) -> dict:
    import grain

    from metalm_jax.data import tokenizer as toklib
    from metalm_jax.data.feed import pipeline
    from metalm_jax.data.pretrain.prepared_rows import StepIterator
    from metalm_jax.model.build import derive

    tok = toklib.open_tokenizer(cfg.data.tokenizer_path)
    fmt = derive(cfg, tok).rows
    batch = cfg.train.batch_size // HOSTS
    batches = pipeline.prepared_batches(cfg, tok, batch, fmt, (0, HOSTS))
    options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    it = StepIterator(batches, options, workers=workers)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        next(it)
    pids = [p.pid for p in multiprocessing.active_children()]
    m0 = _self_cpu()
    c0 = m0 + sum(map(_cpu_of, pids))
    t0, n, images = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds:
        b = next(it)
        n += 1
        if "image_valid" in b:  # cheap: the images themselves are not touched here
            images += int(b["image_valid"].sum())
    wall = time.perf_counter() - t0
    main = _self_cpu()
    cpu = main + sum(map(_cpu_of, pids)) - c0
    main -= m0
    it.close()
    rows = n * batch
    return {
        "workers": workers,
        "rows_per_s": rows / wall,
        "rows_per_cpu_s": rows / cpu,
        "images_per_s": images / wall,
        "cpu_cores": cpu / wall,
        "first_batch_s": first,
        "batch": batch,
        # what the training process itself spends per row (receiving the workers' batches):
        # its ceiling in rows/s, however many workers
        "main_rows_per_cpu_s": rows / main if main > 0 else float("inf"),
    }


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", default="/tmp/feed_speed")
    ap.add_argument("--configs", nargs="+", default=["metalm_lm", "metalm_vl"])
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--prepare-workers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=4, help="KJV copies in the text corpus")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    from absl import flags

    flags.FLAGS.mark_as_parsed()
    from metalm_jax.model.build import image_layout

    write_data(args.workdir, args.images if "metalm_vl" in args.configs else 0, args.copies)
    print("overrides: data.vocab_size=8192", flush=True)
    for name in args.configs:
        vl = name == "metalm_vl"
        cfg = load(name, args.workdir, vl)
        layout = image_layout(cfg) if vl else None
        with cfg.unlocked():
            cfg.data.tokenizer_path = tokenizer(cfg, args.workdir, name, vl)
        for w in args.prepare_workers:
            r = measure_prepare(cfg, w, layout)
            line = (
                f"{name} prepare workers={w}: {r['wall']:.1f} s wall, {r['cpu']:.1f} CPU-s, "
                f"{r['tokens']:,} tokens, {r['tokens'] / r['wall']:,.0f} tokens/s; per worker "
                f"{r['tokens_per_worker_s']:,.0f} tokens/s"
            )
            if r["images"]:
                line += (
                    f"; {r['images']:,} images, {r['images'] / r['wall']:,.1f} images/s, per "
                    f"worker {r['images_per_worker_s']:,.1f} images/s"
                )
            print(line, flush=True)
        for w in args.workers:
            r = measure_reading(cfg, w, args.warmup, args.seconds)
            print(
                f"{name} read workers={w}: batch {r['batch']}, {r['rows_per_s']:,.0f} rows/s, "
                f"{r['rows_per_cpu_s']:,.0f} rows/CPU-s, {r['cpu_cores']:.2f} cores, "
                f"{r['images_per_s']:,.0f} images/s, main process {r['main_rows_per_cpu_s']:,.0f} "
                f"rows/CPU-s, first batch {r['first_batch_s']:.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
