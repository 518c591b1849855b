"""Shared fixtures and the two test tiers.

Tiers: `python -m pytest` runs the default tier (every test not marked `slow`: units, small
compiles, file-level checks; a few minutes on 2 cores), `python -m pytest --full -n 2` the full
tier (CI: also the end-to-end runs, subprocesses, several processes; slow tests first, on two
pytest-xdist workers). An explicit `-m` chooses for itself. In the default tier, a test whose
call takes longer than SLOW_LIMIT_S fails, naming the limit, so the tier stays fast: mark such a
test slow or make it faster (METALM_SLOW_LIMIT_S changes the limit, 0 turns it off; the full
tier does not apply it: CI's numbers are the budget there).

Fixtures: one prepared micro corpus + tokenizer per session (tokenizer training and TFDS
preparation happen once), and one trained micro run per session (`micro_run`), shared
read-only by the tests that need a trained workdir (copy it to change it).
"""

import os
import shutil

import pytest

from metalm_jax import testing

SLOW_LIMIT_S = float(os.environ.get("METALM_SLOW_LIMIT_S", "10"))

# XLA's CPU backend without LLVM's optimisation passes, and with its older elemental emitters
# instead of the MLIR fusion emitters: the suite's programs are micro models whose compile, not
# their run, is the time (a micro VL finetune: 36 s of compiles -> 21 s with the first two; the
# micro model's init + first step: 13.1 -> 10.1 CPU-s median of four with the third, the steps
# after it as fast: benchmarks/RESULTS.md). No fast-math either way. Set for this process and,
# through the environment, every command a test starts. libtpu's XLA does not know the third
# and aborts the process on it: the AOT tests take it out before libtpu starts
# (libtpu_reads_xla_flags below).
CPU_ONLY_FLAGS = "--xla_cpu_use_fusion_emitters=false"
FAST_COMPILE_FLAGS = (
    f"--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true {CPU_ONLY_FLAGS}"
)


@pytest.fixture
def libtpu_reads_xla_flags(monkeypatch):
    """XLA_FLAGS without the suite's CPU-only flags, for a test that starts libtpu: it reads
    XLA_FLAGS when the first TPU compile starts it, and aborts the process on a flag its XLA does
    not know (the CPU backend read them at its start already)."""
    drop = CPU_ONLY_FLAGS.split()
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f not in drop]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        help="the full tier: also the tests marked slow (end-to-end runs; CI runs this)",
    )


def _default_tier(config) -> bool:
    return not (config.getoption("--full") or config.getoption("markexpr"))


def pytest_collection_modifyitems(config, items):
    if not _default_tier(config):
        # the heavy tests first (a stable sort: file order otherwise): with pytest-xdist's
        # workers (-n 2, README's full command) the quick ones then fill in at the end
        # instead of one worker finishing a long end-to-end run alone
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)


def pytest_report_header(config):
    if not _default_tier(config):
        return None
    return "default tier: tests marked slow are deselected (python -m pytest --full -n 2 runs all)"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's work-stealing scheduler for a plain `-n N` (README's full tier): its
    default hands each worker a fixed queue, and one worker was left running nine minutes of
    end-to-end tests alone while the other sat idle. An explicit --dist other than load
    chooses for itself."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if (
        call.when == "call"
        and report.passed
        and SLOW_LIMIT_S > 0
        and call.duration > SLOW_LIMIT_S
        and _default_tier(item.config)
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {call.duration:.1f} s, over the default tier's {SLOW_LIMIT_S:g} s "
            "limit: make it faster or mark it @pytest.mark.slow (full tier: --full)"
        )
    return report


def _built_once(tmp_path_factory, name: str, build) -> str:
    """A directory `build(path)` fills once per test run, then read-only: this session's own,
    or under pytest-xdist one that all workers share (the first to take the file lock builds
    it, the others wait and reuse it)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        path = str(tmp_path_factory.mktemp(name))
        build(path)
        return path
    from filelock import FileLock

    path = os.path.join(tmp_path_factory.getbasetemp().parent, name)
    with FileLock(path + ".lock"):
        if not os.path.exists(os.path.join(path, ".built")):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            build(path)
            open(os.path.join(path, ".built"), "w").close()
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(config, tokenizer) for a 60-chapter KJV JSONL corpus prepared as a TFDS LocalText; the
    files (and the trained tokenizer) are built once per run, by one worker under xdist."""
    from metalm_jax.data.feed import pipeline

    def config(base):
        path = os.path.join(base, "kjv60.jsonl")
        return testing.micro_config([path], data_dir=os.path.join(base, "tfds"))

    def build(base):
        testing.write_kjv_jsonl(os.path.join(base, "kjv60.jsonl"))
        pipeline.build_tokenizer(config(base), os.path.join(base, "work"))

    base = _built_once(tmp_path_factory, "corpus", build)
    cfg = config(base)
    return cfg, pipeline.build_tokenizer(cfg, os.path.join(base, "work"))  # the saved one


@pytest.fixture(scope="session")
def micro_run(corpus, tmp_path_factory) -> str:
    """The workdir of one trained micro run (corpus config: 6 steps, checkpoints at 3 and 6,
    evals at 3 and 6, a sample at the end), trained once per run (by one worker under xdist).
    Read-only: a test that resumes, damages or finetunes from it works on a copy
    (shutil.copytree)."""
    from metalm_jax.loop import train_and_evaluate

    cfg, _ = corpus

    def build(base):
        train_and_evaluate(cfg.copy_and_resolve_references(), os.path.join(base, "run"))

    return os.path.join(_built_once(tmp_path_factory, "micro_run", build), "run")


def pytest_configure(config):
    """One persistent compilation cache for the session: this process's in-process tests (many
    compile the same micro-model programs) and, through JAX_COMPILATION_CACHE_DIR in the
    environment they inherit, the single-process commands the tests start (a train or finetune
    command line compiles the same micro step again). The processes of a multi-process job
    drop it (tests/_procs.cpu_env(cache=False): a two-process Gloo run missed its coordinator
    deadline with a shared cache), and tests that want a cache of their own pass it. Every
    compile is cached (minimum compile time 0): with the fast-compile flags most take under
    half a second, and a command started by a test pays its compiles again otherwise. Each
    pytest-xdist worker has a cache of its own: JAX writes entries in place, unlocked, so a
    shared one could hand a reader half an entry; a size limit would make JAX lock it, but then
    every write scans the whole cache (thousands of entries: the full tier took 17:40 instead
    of 14:47)."""
    import atexit
    import tempfile

    import jax

    cache = tempfile.mkdtemp(prefix="metalm_test_jax_cache_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    flags = os.environ.get("XLA_FLAGS", "")
    if FAST_COMPILE_FLAGS not in flags:  # read when the backend starts: no test has run yet
        os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE_FLAGS}".strip()
