"""Every config in configs/ loads and builds abstractly; the paper sizes count right; the CLI
rejects unknown keys."""

import glob
import os
import subprocess
import sys

import pytest

from metalm_jax.config import load_config_file
from metalm_jax.model.build import abstract_params, count_params, model_config
from metalm_jax.model.metalm import MetaLM
from metalm_jax.types import ConfigError
from tests import _needs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(path):
    return load_config_file(path)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_abstractly(path):
    _needs.skip_unless_loadable(path)
    cfg = load(path)
    assert cfg.name == os.path.basename(path)[:-3]
    params = abstract_params(MetaLM(model_config(cfg)))
    counts = count_params(params)
    assert counts["decoder"] > 0
    assert os.path.basename(path)[:-3] in (cfg.name,)


def test_paper_language_config_parameter_counts():
    cfg = load(os.path.join(ROOT, "configs", "metalm_lm.py"))
    counts = count_params(abstract_params(MetaLM(model_config(cfg))))
    # PAPER.md §1.1: decoder "about 1.3B" (24 x 2048, 64k tied vocab), encoder "about 366M"
    assert 1.25e9 <= counts["decoder"] <= 1.40e9, counts
    assert 0.355e9 <= counts["text_encoder"] <= 0.375e9, counts


def test_minilm_config_docks_the_real_minilm():
    _needs.minilm()
    cfg = load(os.path.join(ROOT, "configs", "tiny_minilm.py"))
    counts = count_params(abstract_params(MetaLM(model_config(cfg))))
    # all-MiniLM-L6-v2 without its pooler: 22,713,216 - 147,840 = 22,565,376 parameters, less the
    # token-type table (folded into the positions: 768) and the 6 key biases (2,304)
    assert counts["text_encoder"] == 22_565_376 - 768 - 6 * 384, counts
    e = cfg.model.text_encoder
    assert (e.num_layers, e.d_model, e.vocab_size, e.norm, e.activation) == (
        6,
        384,
        30522,
        "post",
        "gelu_exact",
    )


def test_spans_longer_than_encoder_max_len_are_rejected():
    cfg = load(os.path.join(ROOT, "configs", "tiny.py"))
    cfg.spans.max_len = 80
    with pytest.raises(ConfigError, match="model.text_encoder.max_len=64"):  # one CLI line
        model_config(cfg)


@pytest.mark.parametrize(
    "flag, line",
    [
        (
            "--config.train.stepz=5",
            "error: --config.train.stepz: unknown key 'stepz' in train; did you mean \"steps\"?",
        ),
        (
            "--config.trainz.steps=5",
            "error: --config.trainz.steps: unknown key 'trainz' in the config; "
            'did you mean "train"?',
        ),
        ("--config.model.nokey.x=1", "error: --config.model.nokey.x: unknown key 'nokey' in model"),
    ],
)
def test_cli_rejects_an_unknown_config_key(tmp_path, flag, line):
    """One clean last line (ml_collections' two-line KeyError once came out with a literal
    backslash-n in it), exit 2, before any training: the workdir is not created."""
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "metalm_jax.train", "--config", "configs/tiny.py", flag]
        + ["--workdir", str(workdir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == line, last
    assert "\\" not in last
    assert not workdir.exists()


def test_paper_vision_language_config_parameter_counts():
    cfg = load(os.path.join(ROOT, "configs", "metalm_vl.py"))
    counts = count_params(abstract_params(MetaLM(model_config(cfg))))
    # PAPER.md §1.2: decoder 353M (GPT-2 medium with a 50,257 vocabulary), VLMo encoder 192M.
    assert 0.345e9 <= counts["decoder"] <= 0.360e9, counts
    # Ours is 181M: two modality experts; VLMo-Base also has a vision-language expert in its top
    # layers (~+9M) and a 30k BERT vocabulary (ours shares the decoder's 50k).
    assert 0.175e9 <= counts["vision_encoder"] <= 0.200e9, counts


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_task_configs_name_known_tasks(path):
    """Every finetuning config's tasks (and its evaluators' tasks) are registered ones."""
    from metalm_jax.data.tasks.mixture import entries
    from metalm_jax.data.tasks.registry import task_names

    _needs.skip_unless_loadable(path)
    cfg = load(path)
    if not cfg.task.name:
        return
    names = [t.name for t in entries(cfg.task)]
    for ev in cfg.evals.values():
        names += [dict(t)["name"] for t in ev.get("tasks", [])]
    unknown = [n for n in names if n not in task_names()]
    assert not unknown, unknown
    assert cfg.finetune.from_run  # downstream configs start from a pretraining run


@pytest.mark.parametrize(
    "value",
    [
        '["{d}/a.jsonl", "{d}/b.txt"]',
        "{d}/a.jsonl,{d}/b.txt",
        "{d}/*",
        '("{d}/a.jsonl", "{d}/b.txt")',
    ],
)
@pytest.mark.parametrize("key", ["data.files", "images.files"])
def test_paths_keys_take_every_command_line_form(tmp_path, key, value):
    """A list literal, comma-separated paths and a glob each parse as a command-line override
    (a list-typed key took none of them) and name the same files."""
    from absl import flags
    from ml_collections import config_flags

    from metalm_jax.data.corpora.text import expand_paths

    for name in ["a.jsonl", "b.txt"]:
        (tmp_path / name).write_text("x")
    argv = ["prog", f"--config.{key}={value.format(d=tmp_path)}"]
    fv = flags.FlagValues()
    cfg = load(os.path.join(ROOT, "configs", "tiny.py"))
    config_flags.DEFINE_config_dict("config", cfg, flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    got = fv.config.data.files if key == "data.files" else fv.config.images.files
    assert expand_paths(got, key) == (str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt"))
