"""README's commands run as written, end to end, shrunk to micro sizes by `testing.micro_flags`
(paths under /data/ are moved to a temporary folder)."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from metalm_jax import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands(section: str, block: int = 0) -> list[str]:
    """The commands of README's `## section`'s indented block number `block` (from 0), one per
    line, continuation lines joined."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"\n\n((?:    .*\n)+)", "\n" + body)
    assert len(blocks) > block, f"README.md: no indented block {block} under '## {section}'"
    return [line.strip() for line in blocks[block].replace("\\\n", " ").splitlines()]


def readme_command(section: str) -> str:
    """The first indented command of README's `## section`, continuation lines joined."""
    return readme_commands(section)[0]


def run_cli(argv: list[str], tmp_path) -> subprocess.CompletedProcess:
    assert argv[:3] == ["python", "-m", "metalm_jax.train"], argv
    argv = [sys.executable, *argv[1:], *testing.micro_flags(steps=2)]
    argv += [f"--config.data.tfds_data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_own_corpus_command(tmp_path):
    """`## Your own corpus`: .jsonl files by a glob plus a .txt file, two training steps."""
    data = tmp_path / "data"
    data.mkdir()
    testing.write_kjv_jsonl(str(data / "a.jsonl"), 30)
    with open(data / "c.jsonl", "w", encoding="utf-8") as f:  # a second match of the glob
        f.write(json.dumps({"text": "Second file.\nTwo paragraphs."}) + "\n")
    (data / "b.txt").write_text("A text file.\n\nIts second paragraph.\n", encoding="utf-8")
    command = readme_command("Your own corpus").replace("/data/", f"{data}/")
    # A micro corpus needs a larger held-out share than the default 2% to fill validation.
    out = run_cli([*shlex.split(command), "--config.data.validation_fraction=0.3"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step      2/2" in out.stdout, out.stdout[-2000:]
    [info] = (tmp_path / "tfds").glob("local_text/files_*/1.0.0/dataset_info.json")
    description = json.loads(info.read_text())["description"]
    assert all(str(data / n) in description for n in ["a.jsonl", "b.txt", "c.jsonl"])


@pytest.mark.slow
def test_own_corpus_jsonl_zst_commands(tmp_path):
    """`## Your own corpus`, its .jsonl.zst example: the command that writes the bundled KJV as
    kjv.jsonl.zst (run as written, in an empty folder), then two training steps on it."""
    write, train = readme_commands("Your own corpus", 1)
    data = tmp_path / "data"
    data.mkdir()
    argv = shlex.split(write)
    assert argv[:2] == ["python", "-c"], argv
    out = subprocess.run([sys.executable, *argv[1:]], cwd=data, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    corpus = data / "kjv.jsonl.zst"
    assert corpus.stat().st_size > 0
    argv = shlex.split(train.replace("=kjv.jsonl.zst", f"={corpus}"))
    argv = [a for a in argv if a not in ("--workdir", "runs/tiny_zst")]  # run_cli's own
    out = run_cli(argv, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step      2/2" in out.stdout, out.stdout[-2000:]
    [info] = (tmp_path / "tfds").glob("local_text/files_*/1.0.0/dataset_info.json")
    assert str(corpus) in json.loads(info.read_text())["description"]


def _prepared_section(block: int, tmp_path, write: bool = True):
    """The commands of `## Prepared data`'s block `block`, with their files in tmp_path/data
    and prepared/ under tmp_path; the block's first command (writing the data) run there as
    written, unless the block has none (`write` False); then its prepare command. The train
    command (argv) and prepare's stdout."""
    commands = readme_commands("Prepared data: tokenize and pack once (prepare, then train)", block)
    prep, train = commands[-2:]
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if write:
        argv = [sys.executable, *shlex.split(commands[0])[1:]]
        out = subprocess.run(argv, cwd=data, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]

    def here(command: str) -> list[str]:
        for name in ("kjv.jsonl.zst", "kjv.parquet", "emoji_wds"):
            command = command.replace(f"={name}", f"={data / name}")
            command = command.replace(f"='{name}", f"='{data / name}")
        return shlex.split(command.replace("prepared/", f"{tmp_path / 'prepared'}/"))

    argv = here(prep)
    assert argv[:3] == ["python", "-m", "metalm_jax.prepare"], argv
    argv = [sys.executable, *argv[1:], *testing.micro_flags(steps=2)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rows/s, ETA" in out.stdout and "== prepared" in out.stdout, out.stdout[-2000:]
    return here(train), out.stdout


@pytest.mark.slow
def test_prepared_data_commands(tmp_path):
    """`## Prepared data`, every block as written (micro sizes): the KJV as kjv.jsonl.zst (the
    command of `## Your own corpus`) and as kjv.parquet, each prepared; the emoji webdataset
    shards prepared with the .jsonl.zst text for tiny_vl, then two training steps on those
    prepared rows (text and image-text, a caption eval). (Training on prepared text rows alone:
    tests/test_prepare.py.)"""
    write_zst = readme_commands("Your own corpus", 1)[0]
    (tmp_path / "data").mkdir()
    argv = [sys.executable, *shlex.split(write_zst)[1:]]
    done = subprocess.run(argv, cwd=tmp_path / "data", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for block, name in ((0, "kjv"), (1, "kjv_parquet")):
        _, out = _prepared_section(block, tmp_path, write=block > 0)
        manifest = json.loads((tmp_path / "prepared" / name / "manifest.json").read_text())
        docs = sum(manifest["splits"][s]["documents"] for s in ("train", "validation"))
        assert docs == 1189, out[-2000:]
    train, out = _prepared_section(2, tmp_path)
    assert "== image-text: train" in out, out[-2000:]
    manifest = json.loads((tmp_path / "prepared" / "kjv_emoji" / "manifest.json").read_text())
    images = manifest["splits"]
    assert images["images_train"]["documents"] + images["images_validation"]["documents"] == 400
    argv = [a for a in train if a not in ("--workdir", "runs/tiny_vl_prepared")]
    done = run_cli(argv, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step      2/2" in done.stdout and "caption_loss" in done.stdout, done.stdout[-2000:]
    assert not (tmp_path / "tfds").exists()  # training did not read the corpus files again
