"""A workdir on an object store (gs://bucket/run): every file a run writes or reads there besides
Orbax's checkpoints goes through etils.epath (metalm_jax/paths.py).

No network: epath reaches gs:// through fsspec (its fsspec backend asks for the "gcs"
filesystem), and each test registers an in-memory filesystem under that name. Each test also
runs in an empty current directory and checks that nothing appeared there: a writer that fell
back to a local-file API would create `gs:/bucket/...` in it (or fail to find the bucket's
objects in memory). Orbax and TensorStore cannot be faked this way (TensorStore's gcs driver goes
to the network), so checkpoints themselves are not written here; the checkpoint side files
(set-aside steps) are.
"""

import importlib
import json
import os
import time
import types

import pytest
from fsspec.implementations.memory import MemoryFileSystem

RUN = "gs://bucket/run"


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """An empty in-memory gs:// (and gcs://) filesystem; the test runs in an empty directory."""
    from etils.epath import backend, gpath

    class Bucket(MemoryFileSystem):
        protocol = ("gs", "gcs")
        store = {}  # per test: MemoryFileSystem keeps its objects on the class
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            path = os.fspath(path)
            for prefix in ("gs://", "gcs://"):
                path = path.removeprefix(prefix)
            return super()._strip_protocol(path)

    registry = importlib.import_module("fsspec.registry")  # (fsspec.registry is a mapping)
    for name in ("gs", "gcs"):
        monkeypatch.setitem(registry._registry, name, Bucket)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath's fsspec backend
    cache = type(backend.fsspec_backend)._get_filesystem
    cache.cache_clear()
    local = tmp_path / "cwd"
    local.mkdir()
    monkeypatch.chdir(local)
    yield Bucket()
    cache.cache_clear()
    assert os.listdir(local) == [], "a local-file API wrote into the current directory"


def _text(fs, path: str) -> str:
    return fs.cat_file(path).decode("utf-8")


def test_metrics_jsonl_and_tensorboard_go_to_the_bucket_and_a_resume_appends(bucket, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from metalm_jax.training.metrics import MetricWriter

    logs = []
    w = MetricWriter(RUN, log=logs.append)
    w.write(2, {"train/loss": 3.5})
    # visible before close: a run killed now keeps what it logged
    assert json.loads(_text(bucket, f"{RUN}/metrics.jsonl"))["step"] == 2
    w.write(4, {"train/loss": 3.0})
    w.close()
    assert "TensorBoard" in logs[0] and f"{RUN}/tb" in logs[0]
    time.sleep(1.1)  # events files are named by the second they were opened in
    w = MetricWriter(RUN, log=logs.append)  # a resumed run
    w.write(6, {"train/loss": 2.5})
    w.close()
    records = [json.loads(x) for x in _text(bucket, f"{RUN}/metrics.jsonl").splitlines()]
    assert [(r["step"], r["train/loss"]) for r in records] == [(2, 3.5), (4, 3.0), (6, 2.5)]

    events = bucket.ls(f"{RUN}/tb", detail=False)
    assert len(events) == 2 and all("tfevents" in e for e in events)
    copy = tmp_path / "tb"  # TensorBoard reads local files: the bucket's events, copied out
    copy.mkdir()
    for e in events:
        (copy / os.path.basename(e)).write_bytes(bucket.cat_file(e))
    ea = EventAccumulator(str(copy), size_guidance={"scalars": 0})
    ea.Reload()
    assert sorted(s.step for s in ea.Scalars("train/loss")) == [2, 4, 6]


def test_tokenizers_are_saved_in_and_read_from_the_bucket(bucket, tmp_path):
    from metalm_jax import testing
    from metalm_jax.data import tokenizer
    from metalm_jax.data.corpora.text import kjv_chapters

    texts = ["\n".join(v) for _, v in kjv_chapters()[:20]]
    bpe = testing.write_byte_bpe(str(tmp_path / "bpe.json"), texts)
    tok = tokenizer.for_run(RUN, bpe, None, 0)  # a configured tokenizer.json: copied in
    assert bucket.cat_file(f"{RUN}/tokenizer.json") == open(bpe, "rb").read()
    back = tokenizer.saved(RUN)  # what eval/load.py reads
    assert back.kind == "json" and back.source == f"{RUN}/tokenizer.json"
    assert back.encode("In the beginning") == tok.encode("In the beginning")

    run2 = "gs://bucket/run2"  # no tokenizer configured: a SentencePiece trained and cached
    sp = tokenizer.for_run(run2, "", lambda: iter(texts), 400)
    assert bucket.cat_file(f"{run2}/tokenizer.model") == sp.sp.serialized_model_proto()
    again = tokenizer.for_run(run2, "", lambda: pytest.fail("trained again"), 400)
    assert again.source == f"{run2}/tokenizer.model"
    assert tokenizer.saved(run2).encode("the earth") == sp.encode("the earth")


def test_eval_outputs_go_to_the_bucket(bucket):
    from metalm_jax.eval.evaluators import _write

    _write(RUN, "ppl", {"loss": 1.5}, [{"id": "a", "ok": True}, {"id": "b", "ok": False}])
    assert json.loads(_text(bucket, f"{RUN}/evals/ppl/metrics.json")) == {"loss": 1.5}
    lines = _text(bucket, f"{RUN}/evals/ppl/predictions.jsonl").splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_the_lock_on_the_bucket_refuses_a_second_holder_and_is_released(bucket, monkeypatch):
    from metalm_jax.training import workdir_lock
    from metalm_jax.training.workdir_lock import ObjectStoreLock, WorkdirBusyError, hold_workdir

    monkeypatch.setattr(ObjectStoreLock, "settle_s", 0.0)
    logs = []
    with hold_workdir(RUN, 10.0, logs.append):
        assert "advisory" in logs[-1]
        holder = json.loads(_text(bucket, f"{RUN}/{workdir_lock.LOCK_NAME}"))
        assert holder["pid"] == os.getpid()
        with pytest.raises(WorkdirBusyError, match=f"pid {os.getpid()} on host"):
            ObjectStoreLock(RUN).acquire()
    assert not bucket.exists(f"{RUN}/{workdir_lock.LOCK_NAME}")

    # another host's lock whose lease ran out is taken over, with a message
    old = {"host": "elsewhere", "pid": 1, "started": 0.0, "refreshed": time.time() - 3600}
    bucket.pipe_file(f"{RUN}/{workdir_lock.LOCK_NAME}", json.dumps(old).encode())
    with pytest.raises(WorkdirBusyError, match="host elsewhere"):
        ObjectStoreLock(RUN, lease_minutes=120).acquire()
    lock = ObjectStoreLock(RUN, lease_minutes=10, log=logs.append)
    lock.acquire()
    assert "took over" in logs[-2] and "host elsewhere" in logs[-2]
    assert lock.refresh()
    # a run that wrote its own lock meanwhile (the advisory case): the holder notices
    theirs = dict(old, refreshed=time.time(), token="theirs")
    bucket.pipe_file(f"{RUN}/{workdir_lock.LOCK_NAME}", json.dumps(theirs).encode())
    assert not lock.refresh() and "taken by another run" in logs[-1]
    lock.release()  # not ours: left alone
    assert json.loads(_text(bucket, f"{RUN}/{workdir_lock.LOCK_NAME}"))["token"] == "theirs"


def test_checkpoint_steps_are_set_aside_in_the_bucket(bucket):
    from metalm_jax.training.checkpoint import Checkpointer

    for step in (7, 9):
        bucket.pipe_file(f"{RUN}/checkpoints/{step}/state/array", f"arrays {step}".encode())
        bucket.pipe_file(f"{RUN}/checkpoints/{step}/digest", b"{}")
    ckpt = Checkpointer.__new__(Checkpointer)  # Orbax's manager needs the network: a stand-in
    ckpt.directory = f"{RUN}/checkpoints"
    ckpt.manager = types.SimpleNamespace(reload=lambda: None)
    logs = []
    ckpt._set_aside([9], logs.append)
    assert _text(bucket, f"{RUN}/checkpoints_set_aside/9/state/array") == "arrays 9"
    assert bucket.exists(f"{RUN}/checkpoints_set_aside/9/digest")
    assert not bucket.exists(f"{RUN}/checkpoints/9") and bucket.exists(f"{RUN}/checkpoints/7")
    bucket.pipe_file(f"{RUN}/checkpoints/9/state/array", b"arrays 9, again")
    ckpt._set_aside([9], logs.append)  # the name is taken: 9.1
    assert _text(bucket, f"{RUN}/checkpoints_set_aside/9.1/state/array") == "arrays 9, again"
    assert "checkpoints_set_aside" in logs[-1]


def test_finetune_reads_its_source_run_in_the_bucket(bucket, tmp_path):
    from metalm_jax import testing
    from metalm_jax.training.finetune import _copy_tokenizer, _run_dir
    from metalm_jax.training.init_from import orbax_checkpoint_dir

    src = "gs://bucket/pretrained"
    for step in (3, 12):
        bucket.pipe_file(f"{src}/checkpoints/{step}/state/array", b"x")
    step_dir = orbax_checkpoint_dir(src)
    assert step_dir == f"{src}/checkpoints/12" and _run_dir(step_dir) == src
    bpe = testing.write_byte_bpe(str(tmp_path / "bpe.json"), ["a few words of text"] * 4)
    bucket.pipe_file(f"{src}/tokenizer.json", open(bpe, "rb").read())
    saved = types.SimpleNamespace(data=types.SimpleNamespace(tokenizer_path=""))
    out = types.SimpleNamespace(data=types.SimpleNamespace(tokenizer_path="x"))
    _copy_tokenizer(saved, src, "gs://bucket/finetuned", out)
    assert bucket.cat_file("gs://bucket/finetuned/tokenizer.json") == open(bpe, "rb").read()
    assert out.data.tokenizer_path == ""


def test_a_bucket_without_its_filesystem_library_is_a_one_line_config_error(monkeypatch):
    from etils.epath import backend, gpath

    from metalm_jax.training.workdir_lock import hold_workdir
    from metalm_jax.types import ConfigError

    class NoGcsfs:
        def __init__(self, *args, **kwargs):
            raise ImportError("Install gcsfs to access Google Storage")

    registry = importlib.import_module("fsspec.registry")
    for name in ("gs", "gcs"):
        monkeypatch.setitem(registry._registry, name, NoGcsfs)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    cache = type(backend.fsspec_backend)._get_filesystem
    cache.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"gs://bucket/run: Install gcsfs.*\[gcs\]"):
            with hold_workdir(RUN, 10.0):
                pass
    finally:
        cache.cache_clear()


def test_metric_writer_does_not_import_torch(tmp_path):
    """tensorboardX imports torch when it is installed (seconds per train command); the writer
    keeps it out (and leaves no None entry behind that would stop torch importing later)."""
    import importlib.util
    import subprocess
    import sys

    from tests import _needs

    if importlib.util.find_spec("torch") is None:  # nothing to keep out: the check would pass
        pytest.skip(f"needs torch to show tensorboardX is kept from it ({_needs.CONVERT})")
    code = (
        "import sys\n"
        "from metalm_jax.training.metrics import MetricWriter\n"
        f"w = MetricWriter({str(tmp_path)!r})\n"
        "w.write(1, {'train/loss': 1.0})\n"
        "w.close()\n"
        "assert 'torch' not in sys.modules, 'tensorboardX brought torch in'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "tb"))
