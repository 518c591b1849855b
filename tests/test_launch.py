"""The launchers in launch/: --dry-run output, option errors, shell quoting, the JobSet YAML,
shellcheck, and that docs/launch.md only uses options the scripts have. No network, no cloud."""

import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
TPU = LAUNCH / "tpu_vm.sh"
GKE = LAUNCH / "gke.sh"
SLURM = LAUNCH / "slurm_gpu.sh"
COMMON = LAUNCH / "common.sh"  # the helpers the three source
BASE = ["--name", "pod", "--zone", "us-east5-a", "--project", "proj"]
OVERRIDES = [
    "--config.data.files=/d/a b/*.jsonl,/d/c.txt",
    "--config.x='q'",
    "--config.train.steps=7",
]


@pytest.fixture(scope="module", autouse=True)
def no_real_tools(tmp_path_factory):
    """Stand-ins for the cloud and cluster tools at the front of PATH: a test that ran one for
    real (a missing --dry-run) fails instead of touching anything."""
    guard = tmp_path_factory.mktemp("guard")
    for tool in ["gcloud", "kubectl", "srun", "sbatch", "scontrol", "rsync", "docker"]:
        fake_bin(guard, tool, f'echo "test_launch: {tool} was run for real" >&2; exit 97')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{guard}:{os.environ['PATH']}")
        yield


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(extra)
    return env


def sh(script, *args, check=True, env=None):
    """Runs `bash script args...`; returns the CompletedProcess (stdout, stderr as text)."""
    res = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env or _env(), timeout=30
    )
    if check:
        assert res.returncode == 0, res.stderr
    return res


def lines(script, *args, **kw):
    """The dry-run commands, each split into argv as a shell would."""
    out = sh(script, "--dry-run", *args, **kw).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


def flag(argv, name):
    """The value of --name=value in argv."""
    vals = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(vals) == 1, (name, argv)
    return vals[0]


def fake_bin(directory, name, body):
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# --- tpu_vm.sh ---------------------------------------------------------------------------------


def test_tpu_create():
    [argv] = lines(TPU, "create", *BASE, "--accelerator-type", "v5p-128")
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod"]
    assert "--zone=us-east5-a" in argv and "--project=proj" in argv
    assert "--accelerator-type=v5p-128" in argv and "--version=v2-alpha-tpuv5" in argv
    assert "--spot" not in argv


def test_tpu_create_spot_and_version():
    [argv] = lines(TPU, "create", *BASE, "--accelerator-type=v6e-64", "--version=my-rt", "--spot")
    assert argv[3:5] == ["tpu-vm", "create"]
    assert "--version=my-rt" in argv and "--spot" in argv


@pytest.mark.parametrize("spot", [False, True])
def test_tpu_create_queued(spot):
    extra = ["--spot"] if spot else []
    [argv] = lines(TPU, "create", *BASE, "--accelerator-type", "v5litepod-16", "--queued", *extra)
    assert " ".join(argv).startswith("gcloud compute tpus queued-resources create pod ")
    assert "--node-id=pod" in argv and "--accelerator-type=v5litepod-16" in argv
    assert "--runtime-version=v2-alpha-tpuv5-lite" in argv
    assert ("--spot" in argv) == spot


def test_tpu_status():
    [argv] = lines(TPU, "status", *BASE)
    assert argv[3:6] == ["tpu-vm", "describe", "pod"]
    [argv] = lines(TPU, "status", *BASE, "--queued")
    assert argv[3:6] == ["queued-resources", "describe", "pod"]


def test_tpu_install_copies_checkout():
    cmds = lines(TPU, "install", *BASE)
    assert [c[0] for c in cmds] == ["mkdir", "rsync", "gcloud", "gcloud"]
    rsync, scp, ssh = cmds[1:]
    assert "--exclude=.git" in rsync and rsync[-2] == f"{ROOT}/"
    assert scp[3:5] == ["tpu-vm", "scp"] and scp[5] == rsync[-1].rstrip("/")
    assert scp[6] == "pod:~/" and "--worker=all" in scp and "--recurse" in scp
    assert ssh[3:6] == ["tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = flag(ssh, "--command")
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[tpu,gcs]'" in remote
    assert "git clone" not in remote


def test_tpu_install_from_repo():
    url = "https://github.com/me/metalm_jax.git"
    [ssh] = lines(TPU, "install", *BASE, "--repo", url, "--python", "python3.11")
    assert "--worker=all" in ssh
    remote = flag(ssh, "--command")
    assert f"git clone {url} metalm_jax" in remote
    assert "python3.11 -m venv .venv && .venv/bin/pip install -e '.[tpu,gcs]'" in remote


def test_tpu_run():
    args = ["--config", "configs/metalm_lm.py", "--workdir", "gs://bucket/run1"]
    [ssh] = lines(TPU, "run", *BASE, *args, "--", "--config.train.steps=1000")
    assert ssh[3:6] == ["tpu-vm", "ssh", "pod"] and "--worker=all" in ssh
    remote = flag(ssh, "--command")
    for piece in [
        "nohup",
        "-m metalm_jax.train",
        "--config configs/metalm_lm.py",
        "--workdir gs://bucket/run1",
        "--multihost",
        "--config.train.steps=1000",
        ">>/tmp/metalm_jax/run1.log",
    ]:
        assert piece in remote, piece


def test_tpu_run_local_workdir_logs_there():
    [ssh] = lines(TPU, "run", *BASE, "--config", "configs/tiny.py", "--workdir", "runs/x/")
    assert ">>runs/x/train.log" in flag(ssh, "--command")


def _run_remote(tmp_path, remote, pgrep_rc):
    """Runs a `run` remote command in a fake home: fake pgrep, fake .venv/bin/python."""
    home = tmp_path / "home"
    fake_bin(tmp_path / "bin", "pgrep", f"exit {pgrep_rc}")
    args_out = tmp_path / "argv.txt"
    fake_bin(home / "metalm_jax/.venv/bin", "python", 'printf "%s\\n" "$@" > "$ARGS_OUT"')
    env = _env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", ARGS_OUT=str(args_out))
    res = subprocess.run(
        ["bash", "-c", remote], cwd=home, env=env, capture_output=True, text=True, timeout=30
    )
    return res, args_out


def test_tpu_run_remote_command_quoting(tmp_path):
    """The command that ssh runs on a worker starts the trainer with the flags given, intact."""
    log = tmp_path / "logs" / "train.log"
    args = ["--config", "configs/a b.py", "--workdir", "gs://b/r", "--log", str(log)]
    [ssh] = lines(TPU, "run", *BASE, *args, "--", *OVERRIDES)
    res, args_out = _run_remote(tmp_path, flag(ssh, "--command"), pgrep_rc=1)
    assert res.returncode == 0, res.stderr
    assert "trainer started" in res.stdout
    deadline = time.time() + 20
    while "exited with status" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, "the background trainer did not finish"
        time.sleep(0.05)
    assert "exited with status 0" in log.read_text()
    assert args_out.read_text().splitlines() == [
        "-m", "metalm_jax.train", "--config", "configs/a b.py", "--workdir", "gs://b/r",
        "--multihost", *OVERRIDES,
    ]  # fmt: skip


def test_tpu_run_refuses_second_trainer(tmp_path):
    [ssh] = lines(TPU, "run", *BASE, "--config", "c.py", "--workdir", "gs://b/r")
    res, args_out = _run_remote(tmp_path, flag(ssh, "--command"), pgrep_rc=0)
    assert res.returncode != 0 and "already running" in res.stderr
    assert not args_out.exists()


def test_tpu_trainer_pattern():
    """stop/run's process pattern matches the trainer, not the shells around it."""
    [ssh] = lines(TPU, "stop", *BASE)
    assert "--worker=all" in ssh
    remote = flag(ssh, "--command")
    pattern = shlex.split(remote)[3]
    assert remote.startswith("pkill -TERM -f ")
    trainer = ".venv/bin/python -m metalm_jax.train --config c.py --multihost"
    assert re.search(pattern, trainer)
    assert not re.search(pattern, "bash -c " + trainer)
    assert not re.search(pattern, "pkill -TERM -f " + pattern)


def test_tpu_logs():
    [ssh] = lines(TPU, "logs", *BASE, "--workdir", "gs://bucket/run1")
    assert "--worker=0" in ssh
    assert "tail -n 200 -F /tmp/metalm_jax/run1.log" in flag(ssh, "--command")
    [ssh] = lines(TPU, "logs", *BASE, "--log", "/tmp/x.log", "--worker", "3")
    assert "--worker=3" in ssh and "/tmp/x.log" in flag(ssh, "--command")


def test_tpu_delete():
    [argv] = lines(TPU, "delete", *BASE)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"]
    assert "--force" not in argv
    [argv] = lines(TPU, "delete", *BASE, "--queued")
    assert argv[3:6] == ["queued-resources", "delete", "pod"] and "--force" in argv


def test_tpu_mount_bucket_read_only_with_metadata_caches_kept():
    [ssh] = lines(TPU, "mount", *BASE, "--bucket", "my-bucket")
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert "--worker=all" in ssh
    remote = flag(ssh, "--command")
    gcsfuse = next(c for c in remote.split(" && ") if c.startswith("gcsfuse "))
    assert shlex.split(gcsfuse) == [
        "gcsfuse", "-o", "ro", "--implicit-dirs", "--metadata-cache-ttl-secs=-1",
        "--stat-cache-max-size-mb=-1", "--type-cache-max-size-mb=-1",
        "--kernel-list-cache-ttl-secs=-1", "my-bucket", "/mnt/my-bucket",
    ]  # fmt: skip
    assert "mountpoint -q /mnt/my-bucket" in remote  # a second mount is a no-op
    assert "gcsfuse is not installed" in remote
    [ssh] = lines(TPU, "mount", *BASE, "--bucket", "b", "--mount-point", "/data/my b")
    remote = flag(ssh, "--command")
    gcsfuse = next(c for c in remote.split(" && ") if c.startswith("gcsfuse "))
    assert shlex.split(gcsfuse)[-2:] == ["b", "/data/my b"]


@pytest.mark.parametrize(
    "args, missing",
    [
        (["mount", "--name", "n", "--zone", "z"], "--bucket"),
        (["mount", "--name", "n", "--zone", "z", "--bucket", "gs://b/dir"], "bucket's name alone"),
        (["create", "--zone", "z", "--accelerator-type", "v4-8"], "--name"),
        (["install", "--name", "n"], "--zone"),
        (["create", "--name", "n", "--zone", "z"], "--accelerator-type"),
        (["create", "--name", "n", "--zone", "z", "--accelerator-type", "tpu7x-8"], "--version"),
        (["run", "--name", "n", "--zone", "z", "--workdir", "gs://b/r"], "--config"),
        (["run", "--name", "n", "--zone", "z", "--config", "c.py"], "--workdir"),
        (["logs", "--name", "n", "--zone", "z"], "--workdir"),
        (["--name", "n", "--zone", "z"], "SUBCOMMAND"),
        (["create", "--name"], "--name"),
        (["launch", "--name", "n", "--zone", "z"], "launch"),
        (["create", "--nmae", "n"], "--nmae"),
        (["delete", "--name", "n", "--zone", "z", "--", "--config.x=1"], "only for run"),
    ],
)
def test_tpu_errors(args, missing):
    res = sh(TPU, "--dry-run", *args, check=False)
    assert res.returncode != 0 and not res.stdout
    assert missing in res.stderr


def test_help():
    for script, word in [(TPU, "queued-resources"), (GKE, "kubectl apply"), (SLURM, "srun")]:
        res = sh(script, "--help")
        assert "Usage:" in res.stdout and word in res.stdout and "--dry-run" in res.stdout


# --- gke.sh / gke_jobset.yaml ------------------------------------------------------------------

GKE_ARGS = ["--name", "metalm-lm", "--image", "us-docker.pkg.dev/p/r/metalm_jax:v1"]
GKE_ARGS += ["--config", "configs/metalm_lm.py", "--workdir", "gs://bucket/run1"]


def parse_yaml(text):
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)


def jobset_parts(doc):
    assert doc["apiVersion"].startswith("jobset.x-k8s.io/") and doc["kind"] == "JobSet"
    [rjob] = doc["spec"]["replicatedJobs"]
    job = rjob["template"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    return job, pod, container


def test_jobset_template_is_consistent():
    text = (LAUNCH / "gke_jobset.yaml").read_text()
    assert "EDIT" in text and "--multihost" in text and "\t" not in text
    job, pod, container = jobset_parts(parse_yaml(text))
    sel = pod["nodeSelector"]
    chips = 1
    for d in sel["cloud.google.com/gke-tpu-topology"].split("x"):
        chips *= int(d)
    per_host = container["resources"]["limits"]["google.com/tpu"]
    assert job["parallelism"] == job["completions"] == chips // per_host
    assert container["command"][:3] == ["python", "-m", "metalm_jax.train"]
    assert "--multihost" in container["command"]


def test_gke_apply_dry_run():
    out = sh(GKE, "apply", *GKE_ARGS, "--topology", "2x2x4", "--dry-run", "--", *OVERRIDES).stdout
    head, *body, tail = out.splitlines()
    assert head == "kubectl apply -f - <<'EOF'" and tail == "EOF"
    text = "\n".join(body)
    assert "metalm-lm" in text and "2x2x4" in text and "--multihost" in text
    job, pod, container = jobset_parts(parse_yaml(text))
    assert job["parallelism"] == job["completions"] == 4
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
        "cloud.google.com/gke-tpu-topology": "2x2x4",
    }
    assert container["resources"]["limits"]["google.com/tpu"] == 4
    assert container["image"] == "us-docker.pkg.dev/p/r/metalm_jax:v1"
    assert container["command"] == [
        "python", "-m", "metalm_jax.train", "--config=configs/metalm_lm.py",
        "--workdir=gs://bucket/run1", "--multihost", *OVERRIDES,
    ]  # fmt: skip


def test_gke_render_single_host_and_v6e():
    args = [*GKE_ARGS, "--accelerator", "tpu-v6e-slice"]

    def render(topology):
        return jobset_parts(parse_yaml(sh(GKE, "render", *args, "--topology", topology).stdout))

    job, pod, container = render("2x2")
    assert job["parallelism"] == 1 and container["resources"]["limits"]["google.com/tpu"] == 4
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v6e-slice"
    job, _, container = render("1x1")
    assert job["parallelism"] == 1 and container["resources"]["limits"]["google.com/tpu"] == 1
    assert render("16x16")[0]["parallelism"] == 64


def test_gke_other_subcommands():
    [argv] = lines(GKE, "delete", "--name", "metalm-lm")
    assert argv == ["kubectl", "delete", "jobset", "metalm-lm"]
    [argv] = lines(GKE, "logs", "--name", "metalm-lm")
    assert argv[:3] == ["kubectl", "logs", "-f"]
    assert "jobset.sigs.k8s.io/jobset-name=metalm-lm" in argv[-1]
    assert len(lines(GKE, "status", "--name", "metalm-lm")) == 2


@pytest.mark.parametrize(
    "args, missing",
    [
        (["apply", *GKE_ARGS[2:]], "--name"),
        (["apply", *GKE_ARGS[:2], *GKE_ARGS[4:]], "--image"),
        (["apply", *GKE_ARGS[:4], "--workdir", "w"], "--config"),
        (["apply", *GKE_ARGS[:6]], "--workdir"),
        (["apply", *GKE_ARGS, "--topology", "4x4x"], "--topology"),
        (["apply", *GKE_ARGS, "--topology", "2x3"], "--chips-per-host"),
        (["apply", "--name", "Bad_Name"], "--name"),
        ([*GKE_ARGS], "SUBCOMMAND"),
    ],
)
def test_gke_errors(args, missing):
    res = sh(GKE, "--dry-run", *args, check=False)
    assert res.returncode != 0 and not res.stdout
    assert missing in res.stderr


# --- slurm_gpu.sh ------------------------------------------------------------------------------

SLURM_ARGS = ["--config", "configs/metalm_lm.py", "--workdir", "/shared/runs/x"]


def test_slurm_header():
    text = SLURM.read_text()
    for directive in ["--nodes=", "--gpus-per-node=", "--ntasks-per-node=1"]:
        assert re.search(rf"^#SBATCH {directive}", text, re.M), directive
    # sbatch reads #SBATCH lines only before the first command
    first_cmd = min(i for i, ln in enumerate(text.splitlines()) if ln and not ln.startswith("#"))
    assert all(i < first_cmd for i, ln in enumerate(text.splitlines()) if ln.startswith("#SBATCH"))


def test_slurm_dry_run_outside_allocation():
    [argv] = lines(SLURM, *SLURM_ARGS, "--", "--config.train.steps=5")
    assert argv[0] == "srun" and "--ntasks-per-node=1" in argv and "--nodes=2" in argv
    assert argv[-3:-1] == ["bash", "-c"]
    inner = argv[-1]
    for piece in [
        f"exec {ROOT}/.venv/bin/python -m metalm_jax.train",
        "--config configs/metalm_lm.py",
        "--workdir /shared/runs/x",
        "--multihost",
        "--coordinator_address=FIRST_NODE:12345",
        "--num_processes=2",
        "--process_id=$SLURM_PROCID",
        "--config.train.steps=5",
    ]:
        assert piece in inner, piece


def test_slurm_inside_allocation(tmp_path):
    """In an allocation: the first node is the coordinator, and each task gets its own rank."""
    fake_bin(tmp_path / "bin", "scontrol", 'printf "gpu-a01\\ngpu-a02\\ngpu-a03\\n"')
    env = _env(
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        SLURM_JOB_NODELIST="gpu-a[01-03]",
        SLURM_NNODES="3",
        SLURM_JOB_ID="1234",
        SLURM_SUBMIT_DIR=str(tmp_path),
    )
    python = fake_bin(tmp_path, "python", 'printf "%s\\n" "$@" > "$ARGS_OUT"')
    args = [*SLURM_ARGS, "--python", str(python), "--", *OVERRIDES]
    [argv] = lines(SLURM, *args, env=env)
    assert "--nodes=3" in argv and f"--chdir={tmp_path}" in argv
    out = tmp_path / "argv.txt"
    env.update(SLURM_PROCID="2", ARGS_OUT=str(out))
    subprocess.run(["bash", "-c", argv[-1]], env=env, check=True, timeout=30)
    assert out.read_text().splitlines() == [
        "-m", "metalm_jax.train", "--config", "configs/metalm_lm.py", "--workdir",
        "/shared/runs/x", "--multihost", "--coordinator_address=gpu-a01:11234",
        "--num_processes=3", "--process_id=2", *OVERRIDES,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, dry, missing",
    [
        (SLURM_ARGS[2:], True, "--config"),
        (SLURM_ARGS[:2], True, "--workdir"),
        (SLURM_ARGS, False, "sbatch"),
        ([*SLURM_ARGS, "--nodes=4"], True, "--nodes"),
    ],
)
def test_slurm_errors(args, dry, missing):
    res = sh(SLURM, *(["--dry-run"] if dry else []), *args, check=False)
    assert res.returncode != 0 and not res.stdout
    assert missing in res.stderr


# --- common.sh: the helpers the three scripts share ----------------------------------------------

QUOTED = {  # word -> how the shared quote_word writes it
    "--config.x='a b'": "--config.x=\"'a b'\"",
    "--flag=value": "--flag=value",
    "--config.data.files=/d/a b/*.jsonl": '--config.data.files="/d/a b/*.jsonl"',
    "--p=it's $HOME": "--p='it'\\''s $HOME'",
    "a b": '"a b"',
}


def test_shared_quoting_reads_back():
    """quote (launch/common.sh) writes each word as expected (for --flag=value the value alone is
    quoted), and a shell reads the line back as the same words."""
    words = list(QUOTED)
    script = f'source {shlex.quote(str(COMMON))}; quote "$@"'
    res = subprocess.run(["bash", "-c", script, "quote", *words], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout == " ".join(QUOTED.values()) + "\n"
    assert shlex.split(res.stdout) == words
    back = subprocess.run(["bash", "-c", f"printf '%s\\n' {res.stdout}"], capture_output=True)
    assert back.stdout.decode().splitlines() == words


def test_scripts_share_one_copy_of_the_helpers():
    """No script defines a helper of its own (gke.sh's quote_word had drifted: no --flag=value
    branch), and the trainer flags come out quoted the same in tpu_vm.sh's and slurm_gpu.sh's
    commands."""
    for script in [TPU, GKE, SLURM]:
        text = script.read_text()
        own = re.findall(r"^(die|require|quote_word|quote|x)\(\)", text, re.M)
        assert not own, (script.name, own)
        assert re.search(r"^source \"\$(SCRIPT_DIR/common\.sh|COMMON)\"$", text, re.M), script.name
    trainer = ["--config.x='a b'", "--flag=value"]
    want = " ".join(QUOTED[w] for w in trainer)
    [ssh] = lines(TPU, "run", *BASE, "--config", "c.py", "--workdir", "gs://b/r", "--", *trainer)
    [srun] = lines(SLURM, *SLURM_ARGS, "--", *trainer)
    remote = shlex.split(flag(ssh, "--command"))
    inner = remote[remote.index("nohup") + 3]  # nohup bash -c INNER: the trainer's command line
    assert inner.startswith("PYTHONUNBUFFERED=1 .venv/bin/python -m metalm_jax.train ")
    assert f"--multihost {want}; echo" in inner and srun[-1].endswith(f"$SLURM_PROCID {want}")


@pytest.mark.parametrize(
    "script, args, line",
    [
        (TPU, ["--nmae"], "tpu_vm.sh: error: unknown option --nmae"),
        (GKE, ["--nmae"], "gke.sh: error: unknown option --nmae"),
        (SLURM, ["--nmae"], "slurm_gpu.sh: error: unknown argument --nmae"),
    ],
)
def test_shared_error_lines_name_the_script(script, args, line):
    res = sh(script, *args, check=False)
    usage = "bash launch/slurm_gpu.sh" if script == SLURM else f"launch/{script.name}"
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.splitlines() == [
        line + " (trainer flags go after --)" if script == SLURM else line,
        f"Run {usage} --help for usage.",
    ]


def _spool_copy(tmp_path):
    """slurm_gpu.sh as sbatch runs it: a copy in Slurm's spool directory, without common.sh."""
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(SLURM, spool / "slurm_script")
    return spool / "slurm_script"


@pytest.mark.parametrize("where", ["submit_dir", "repo_dir", "repo_dir_equals"])
def test_slurm_under_sbatch_finds_the_helpers(tmp_path, where):
    """Under sbatch the script is a copy away from launch/: common.sh is found in the directory
    sbatch was run from, or in --repo-dir."""
    fake_bin(tmp_path / "bin", "scontrol", 'printf "gpu-a01\\n"')
    env = _env(
        PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        SLURM_JOB_NODELIST="gpu-a01",
        SLURM_NNODES="1",
        SLURM_JOB_ID="7",
        SLURM_SUBMIT_DIR=str(ROOT if where == "submit_dir" else tmp_path),
    )
    repo = {"submit_dir": [], "repo_dir": ["--repo-dir", str(ROOT)]}
    repo = repo.get(where, [f"--repo-dir={ROOT}"])
    [argv] = lines(_spool_copy(tmp_path), *SLURM_ARGS, *repo, "--python", "/bin/true", env=env)
    assert argv[0] == "srun" and f"--chdir={ROOT}" in argv


def test_slurm_under_sbatch_without_the_helpers_is_one_line(tmp_path):
    env = _env(SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NODELIST="gpu-a01")
    res = sh(_spool_copy(tmp_path), *SLURM_ARGS, check=False, env=env)
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.splitlines() == [
        f"slurm_gpu.sh: error: no {tmp_path}/launch/common.sh: submit from the repository root "
        "or give --repo-dir"
    ]


# --- shellcheck and docs -----------------------------------------------------------------------


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    scripts = sorted(str(p) for p in LAUNCH.glob("*.sh"))
    assert str(COMMON) in scripts  # checked on its own too, not only as the scripts source it
    # -x: follow each script's `source` of common.sh (its directive names it beside the script)
    res = subprocess.run(
        ["shellcheck", "-x", *scripts], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _doc_commands():
    """(script, rest of line) for every launch/*.sh command in docs/launch.md's ``` blocks."""
    text = (ROOT / "docs" / "launch.md").read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)
    cmds = []
    for line in "".join(blocks).replace("\\\n", " ").splitlines():
        m = re.search(r"launch/(\w+\.sh)\b(.*)", line.split("  #")[0])
        if m:
            cmds.append((m.group(1), m.group(2)))
    return cmds


def test_docs_use_real_options():
    cmds = _doc_commands()
    assert {s for s, _ in cmds} == {"tpu_vm.sh", "gke.sh", "slurm_gpu.sh"}
    helps = {s: sh(LAUNCH / s, "--help").stdout for s in ["tpu_vm.sh", "gke.sh", "slurm_gpu.sh"]}
    for script, rest in cmds:
        ours = rest.split(" -- ")[0]  # trainer flags come after --
        for opt in re.findall(r"(?<![\w.-])--[a-z][a-z-]*", ours):
            assert re.search(rf"(?<![\w-]){opt}\b", helps[script]), f"{script} {opt}: {rest}"
        words = ours.split()
        if words and not words[0].startswith("-") and script != "slurm_gpu.sh":
            assert re.search(rf"^  {words[0]} ", helps[script], re.M), f"{script} {words[0]}"
