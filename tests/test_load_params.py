"""Params-only restore (Checkpointer.restore_params, eval/load.load_run): the same parameters as
the full TrainState restore, read without touching the optimizer state, verified by digests,
with fallback and errors that name the step and the arrays."""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from metalm_jax.data.feed import pipeline
from metalm_jax.model.build import derive
from metalm_jax.parallel.mesh import make_mesh
from metalm_jax.training.checkpoint import Checkpointer
from metalm_jax.training.trainer import build_inference, build_trainer
from metalm_jax.types import CheckpointError

pytestmark = pytest.mark.slow  # the full tier: its fixture trains and saves two steps (13 s)


@pytest.fixture(scope="module")
def saved(corpus, tmp_path_factory):
    """A workdir with steps 1 and 2 of a micro run: (cfg, workdir, trainer, {step: np params})."""
    cfg, tok = corpus
    work = str(tmp_path_factory.mktemp("params_only"))
    shutil.copy(tok.source, os.path.join(work, "tokenizer.model"))
    trainer = build_trainer(cfg, make_mesh((1, 1, 1), jax.devices()[:1]), derive(cfg, tok))
    state = trainer.init(jax.random.key(0))
    it = pipeline.train_iterator(cfg, tok, 4, derive(cfg, tok).rows)
    ckpt = Checkpointer(work, every=1, keep=3)
    params = {}
    for s in (1, 2):
        state, _ = trainer.step(state, trainer.global_batch(next(it)))
        ckpt.save(s, state, it, cfg.to_dict(), force=True)
        ckpt.manager.wait_until_finished()
        params[s] = jax.tree.map(np.asarray, state.params)
    ckpt.close()
    return cfg, work, trainer, params


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _copy(work, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(work, dst)
    return dst


def test_params_only_equals_full_restore_and_reads_no_optimizer_state(saved, monkeypatch, caplog):
    cfg, work, trainer, params = saved
    ckpt = Checkpointer(work, 0, 1)
    full = ckpt.restore(2, trainer.abstract_state, None, cfg.to_dict())
    ckpt.close()
    assert jax.tree.leaves(full.opt_state)  # the full restore does read Adam's moments

    names = []
    handler = ocp.type_handlers.ArrayHandler
    deserialize = handler.deserialize

    async def spy(self, infos, args=None):
        names.extend(info.name for info in infos)
        return await deserialize(self, infos, args)

    monkeypatch.setattr(handler, "deserialize", spy)
    inference = build_inference(cfg, trainer.mesh)
    ckpt = Checkpointer(work, 0, 1)
    with caplog.at_level("WARNING"):
        got, step = ckpt.restore_params(inference.abstract_params)
    ckpt.close()
    assert step == 2
    # Orbax looks for <step>/state/_CHECKPOINT_METADATA, which a CheckpointManager does not write
    assert not [r for r in caplog.records if "Metadata file does not exist" in r.getMessage()]
    _assert_same(got, full.params)
    _assert_same(got, params[2])
    n_params = len(jax.tree.leaves(params[2]))
    assert len(names) == n_params and all(n.startswith("params.") for n in names), names[:4]
    for x, a in zip(jax.tree.leaves(got), jax.tree.leaves(inference.abstract_params), strict=True):
        assert x.sharding == a.sharding  # straight into the chosen mesh's shardings


def test_params_only_restores_without_optimizer_state_and_under_another_optimizer(saved, tmp_path):
    """The step's state rewritten without opt_state (its digests kept): the full restore
    fails, load_run reads the parameters, under a config whose optimizer differs too."""
    from metalm_jax.eval.load import load_run

    cfg, work, trainer, params = saved
    work = _copy(work, tmp_path)
    state_dir = os.path.join(work, "checkpoints", "2", "state")
    shutil.rmtree(state_dir)
    with ocp.StandardCheckpointer() as writer:  # leaving waits for the async save to finish
        writer.save(state_dir, {"params": params[2], "step": np.int32(2)})
    _rewrite_manifest(os.path.dirname(state_dir))  # as if it had been saved that way
    ckpt = Checkpointer(work, 0, 1)
    with pytest.raises(CheckpointError):
        ckpt.restore(2, trainer.abstract_state, None, cfg.to_dict())
    ckpt.close()

    other = cfg.copy_and_resolve_references()
    other.optim.frozen = [r"^decoder/"]  # another optimizer state structure
    other.optim.name = "adam" if cfg.optim.name == "adamw" else "adamw"
    other.spans.enc_length = cfg.spans.enc_length * 2  # rows of another length are fine
    got_cfg, _, inference, got = load_run(work, 2, other)
    assert got_cfg.optim.frozen == [r"^decoder/"]  # evaluated under the given config
    assert inference.derived is not None and not hasattr(inference, "tx")
    _assert_same(got, params[2])


def _rewrite_manifest(step_dir):
    from metalm_jax.training import manifest

    os.remove(os.path.join(step_dir, manifest.part_name(0, 1)))
    manifest.write(step_dir)


def test_params_only_compares_digests_after_the_read_and_skips_damaged_steps(saved, tmp_path):
    """A digest that disagrees with intact files (a save or restore bug) stops the read, naming
    the array, with no fallback; the same edit without a matching manifest is damage: the newest
    intact step (1) is read instead, after one line."""
    cfg, work, trainer, params = saved
    work = _copy(work, tmp_path)
    step_dir = os.path.join(work, "checkpoints", "2")
    digest = os.path.join(step_dir, "digest", "metadata")
    d = json.load(open(digest))
    key = next(k for k in d["arrays"] if k.startswith(".params"))
    d["arrays"][key][0] += 1
    json.dump(d, open(digest, "w"))
    abstract = build_inference(cfg, trainer.mesh).abstract_params
    ckpt = Checkpointer(work, 0, 1)
    lines = []
    got, step = ckpt.restore_params(abstract, None, lines.append)
    assert step == 1 and lines == [
        f"== checkpoint step 2: {digest}: checksum differs from manifest; trying the previous step"
    ]
    _assert_same(got, params[1])
    with pytest.raises(CheckpointError, match=r"^checkpoint step 2: .*checksum differs"):
        ckpt.restore_params(abstract, 2)
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7"):
        ckpt.restore_params(abstract, 7)
    ckpt.close()

    _rewrite_manifest(step_dir)  # the files are as saved: the digest itself is wrong
    for step in (2, None):
        ckpt = Checkpointer(work, 0, 1)
        want = r"^checkpoint step 2 \(.*\): the arrays read do not match the digests saved with "
        with pytest.raises(CheckpointError, match=want + r"them \(digest mismatch in 1 array"):
            ckpt.restore_params(abstract, step)
        ckpt.close()


def test_params_only_names_arrays_that_do_not_fit(saved):
    from metalm_jax.eval.load import load_run

    cfg, work, trainer, _ = saved
    other = cfg.copy_and_resolve_references()
    other.model.decoder.d_ff *= 2
    ckpt = Checkpointer(work, 0, 1)
    with pytest.raises(CheckpointError, match=r"params\['decoder'\].*checkpoint \("):
        ckpt.restore_params(build_inference(other, trainer.mesh).abstract_params, 2)
    ckpt.close()
    with pytest.raises(CheckpointError, match="model.decoder.d_ff: checkpoint"):
        load_run(work, None, other)


def test_load_run_writes_nothing_in_the_run(saved, tmp_path):
    """Reading a run (evaluate, generate, export) leaves its workdir as it was: no file added,
    none rewritten (the Checkpointer is opened with create=False: no checkpoints/ created, no
    manifest marker written)."""
    from metalm_jax.eval.load import load_run

    _, work, _, params = saved
    work = _copy(work, tmp_path)

    def files():
        return {
            os.path.relpath(os.path.join(d, n), work): os.stat(os.path.join(d, n)).st_mtime_ns
            for d, ds, fs in os.walk(work)
            for n in ds + fs
        }

    before = files()
    _, _, _, got = load_run(work)
    assert files() == before
    _assert_same(got, params[2])
