"""The micro model's compile cost under this process's XLA_FLAGS: its trainer built on one device,
init and the first step compiled and run, then 5 steps (benchmarks/RESULTS.md, "Test-suite
time"). Run it in a fresh process per flag set, without a compilation cache, and compare the
CPU time `time` reports:

    F="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    XLA_FLAGS="$F" JAX_PLATFORMS=cpu /usr/bin/time -f "cpu %U+%S" \
        python benchmarks/compile_time.py "suite flags before"
    XLA_FLAGS="$F --xla_cpu_use_fusion_emitters=false" JAX_PLATFORMS=cpu \
        /usr/bin/time -f "cpu %U+%S" python benchmarks/compile_time.py "fusion emitters off"

(XLA's default optimisation, none of these flags: init 14 s, first step 23 s, 67 CPU-s.)
"""

import sys
import time

import jax

from metalm_jax import testing
from metalm_jax.data.spans import SpanConfig
from metalm_jax.parallel.mesh import make_mesh
from metalm_jax.training.trainer import build_trainer


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else ""
    cfg = testing.micro_config()
    cfg.train.batch_size = 8
    batch = testing.random_batch(8, 64, cfg.data.vocab_size, SpanConfig(4, 8, 0.25, 24))
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    t0 = time.perf_counter()
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        state = jax.block_until_ready(trainer.init(jax.random.key(0)))
        t1 = time.perf_counter()
        b = trainer.global_batch(batch)
        state, m = trainer.step(state, b)
        jax.block_until_ready(m)
        t2 = time.perf_counter()
        for _ in range(5):
            state, m = trainer.step(state, b)
        jax.block_until_ready(m)
        t3 = time.perf_counter()
    times = f"init {t1 - t0:5.2f} s, first step {t2 - t1:5.2f} s, 5 steps {t3 - t2:5.2f} s"
    print(f"{label:30s} {times}")


if __name__ == "__main__":
    main()
