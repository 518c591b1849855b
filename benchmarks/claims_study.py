"""The paper's central claims, measured at a size this CPU trains (issue 11, PAPER.md §0, §5).

    python benchmarks/claims_study.py --out runs/study            # the whole study (hours)
    python benchmarks/claims_study.py --out /tmp/smoke --smoke    # 2 steps per run (CI)

Every run is an ordinary `python -m metalm_jax.train` / `evaluate` call on a config in configs/,
with overrides; a run whose `study_done.json` exists is skipped, so the study resumes where it
stopped. Stages:

  pretrain   metalm (configs/tiny.py: semi-causal), gpt (the same decoder with
             text_encoder.enabled=False: a causal LM on the same data for the same steps),
             minilm (configs/tiny_minilm.py: the pretrained MiniLM docked)
  finetune   per task (kjv_books: accuracy by generation; kjv_completion: token F1) and seed:
             (a) metalm, decoder frozen; (b) gpt, full finetuning with the task input in the
             decoder; (c) minilm, decoder frozen; (d) metalm, connector only (a floor)
  icl        the testament task in context at k = 0, 1, 4, with the decoder of (a) before
             (the pretrained metalm) and after its encoder finetuning (a on kjv_books)
  multitask  configs/multitask_kjv.py and configs/instruct_kjv.py (held-out cluster) from metalm

Writes `<out>/study.json` (every figure), `<out>/study.md` (the tables, each with the command
that made its runs) and `<out>/study.png` (validation figure vs finetuning step for (a)-(d),
mean and min-max band over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from metalm_jax.data.tasks.kjv import KJV_BOOKS_WORDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {  # name -> (pretrained run, preset, what it is)
    "a": ("metalm", "decoder_frozen", "MetaLM, decoder frozen (encoder + connector trained)"),
    "b": ("gpt", "full", "GPT baseline, full finetuning, input in the decoder"),
    "c": ("minilm", "decoder_frozen", "MetaLM with MiniLM docked, decoder frozen"),
    "d": ("metalm", "connector_only", "MetaLM, connector only"),
}
WORDS = "(" + ",".join(f"'{w}'" for w in KJV_BOOKS_WORDS) + ")"
TASKS = {  # task -> (its figure in the task evaluator, extra overrides)
    # label words the tiny decoder already spells (data/tasks/kjv.KJV_BOOKS_WORDS): one piece
    # each, where "Major Prophets" is ten
    "kjv_books": (
        "generation_accuracy",
        [f"--config.task.verbalizer={WORDS}", "--config.evals.kjv_books.max_tokens=4"],
    ),  # fmt: skip
    "kjv_completion": (
        "token_f1",
        ["--config.task.max_target_tokens=24", "--config.evals.kjv_books.max_tokens=26"],
    ),  # fmt: skip
}
# every finetuning run: 200 validation examples by free generation every eval_every steps
FINETUNE_EVAL = ["--config.evals.kjv_books.examples=200", "--config.evals.kjv_books.scoring=False"]


def _run(args: list[str], workdir: str, log: str) -> float:
    """Runs a metalm_jax CLI; returns its wall time. Raises with the log's tail on failure."""
    t = time.time()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc:
        tail = open(log).read()[-3000:]
        raise SystemExit(f"{' '.join(args)} failed (rc {rc}); see {log}:\n{tail}")
    return time.time() - t


class Study:
    def __init__(
        self, out: str, smoke: bool, seeds: list[int], pre_steps: int, ft_steps: int,
        variants=tuple(VARIANTS), tasks=tuple(TASKS), ft_batch: int = 8, multitask_steps: int = 150,
    ):  # fmt: skip
        self.out, self.smoke, self.seeds = os.path.abspath(out), smoke, seeds
        self.variants, self.tasks = list(variants), list(tasks)
        self.pre_steps, self.ft_steps = (2, 2) if smoke else (pre_steps, ft_steps)
        self.eval_every = max(1, self.ft_steps // 3)  # three points per curve
        self.ft_batch, self.multitask_steps = ft_batch, (2 if smoke else multitask_steps)
        self.results = self._load()

    def _load(self) -> dict:
        path = os.path.join(self.out, "study.json")
        return json.load(open(path)) if os.path.exists(path) else {"runs": {}}

    def _save(self) -> None:
        os.makedirs(self.out, exist_ok=True)
        with open(os.path.join(self.out, "study.json"), "w") as f:
            json.dump(self.results, f, indent=1)

    def small(self) -> list[str]:
        """Overrides that make every run tiny in smoke mode (CI)."""
        if not self.smoke:
            return []
        return [
            "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
            "--config.train.eval_batches=1", "--config.train.batch_size=2",
            "--config.train.sample_tokens=0",
        ]  # fmt: skip

    def small_model(self, workdir: str) -> list[str]:
        """The smoke pretraining's model keys, for `evaluate` (its config is checked against the
        checkpoint's)."""
        if not self.smoke:
            return []
        pre = json.load(open(os.path.join(self.out, "study.json")))["runs"]
        return [a for a in pre["pretrain/metalm"]["command"].split() if a.startswith(
            ("--config.model.", "--config.data.vocab_size"))]  # fmt: skip

    def stage(self, key: str, args: list[str], workdir: str) -> dict:
        """Runs `args` into `workdir` unless done; returns its record."""
        done = os.path.join(workdir, "study_done.json")
        if os.path.exists(done):
            rec = json.load(open(done))
        else:
            os.makedirs(workdir, exist_ok=True)
            print(f"== {key}: python {' '.join(args)}", flush=True)
            wall = _run(args, workdir, os.path.join(workdir, "study.log"))
            rec = {"command": "python " + " ".join(args), "wall_s": round(wall, 1)}
            with open(done, "w") as f:
                json.dump(rec, f)
        self.results["runs"][key] = rec
        self._save()
        return rec

    def pretrain(self) -> dict[str, str]:
        runs = {}
        needed = {"metalm"} | {VARIANTS[v][0] for v in self.variants}
        for name, config, extra in (
            ("metalm", "configs/tiny.py", []),
            ("gpt", "configs/tiny.py", ["--config.model.text_encoder.enabled=False"]),
            ("minilm", "configs/tiny_minilm.py", []),
        ):
            if name not in needed:
                continue
            wd = os.path.join(self.out, "pretrain", name)
            args = ["-m", "metalm_jax.train", f"--config={config}", f"--workdir={wd}",
                    f"--config.train.steps={self.pre_steps}", *extra, *self.small()]  # fmt: skip
            if self.smoke:  # a 2 x 32 decoder (and encoder): compiles in seconds
                args += [
                    "--config.model.decoder.num_layers=2", "--config.model.decoder.d_model=32",
                    "--config.model.decoder.d_ff=64", "--config.data.vocab_size=400",
                ]  # fmt: skip
                if name != "minilm":
                    args += ["--config.model.text_encoder.num_layers=1",
                             "--config.model.text_encoder.d_model=32"]  # fmt: skip
            self.stage(f"pretrain/{name}", args, wd)
            runs[name] = wd
        return runs

    def finetune(self, pre: dict[str, str], task: str, variant: str, seed: int) -> str:
        source, preset, _ = VARIANTS[variant]
        wd = os.path.join(self.out, "finetune", task, variant, f"seed{seed}")
        args = [
            "-m", "metalm_jax.train", f"--config=configs/finetune_kjv_books.py:{pre[source]}",
            f"--workdir={wd}", f"--config.task.name={task}", f"--config.finetune.preset={preset}",
            f"--config.seed={seed}", f"--config.data.seed={seed}",
            f"--config.train.steps={self.ft_steps}", f"--config.train.eval_every={self.eval_every}",
            f"--config.train.checkpoint_every={self.ft_steps}",
            f"--config.train.batch_size={self.ft_batch}", *FINETUNE_EVAL, *TASKS[task][1],
            *self.small(),
        ]  # fmt: skip
        if self.smoke:
            args += ["--config.evals.kjv_books.examples=4", "--config.task.eval_examples=4"]
        self.stage(f"finetune/{task}/{variant}/seed{seed}", args, wd)
        return wd

    def icl(self, key: str, workdir: str, config: str, extra=()) -> dict:
        args = ["-m", "metalm_jax.evaluate", f"--config={config}", f"--workdir={workdir}",
                "--only=kjv_testament", *self.small_model(workdir), *extra]  # fmt: skip
        if self.smoke:
            args += ["--config.evals.kjv_testament.examples=4",
                     "--config.evals.kjv_testament.trials=1"]  # fmt: skip
        self.stage(key, args, os.path.join(self.out, key))
        return json.load(open(os.path.join(workdir, "evals", "kjv_testament", "metrics.json")))

    def run(self) -> None:
        """The first task's grid, then in-context learning and the multitask runs, then the other
        tasks: a study stopped early has one complete comparison first."""
        pre = self.pretrain()
        self.finetune_grid(pre, self.tasks[:1])
        self.run_icl(pre)
        self.run_multitask(pre)
        self.finetune_grid(pre, self.tasks[1:])

    def finetune_grid(self, pre: dict[str, str], tasks: list[str]) -> None:
        table = self.results.setdefault("finetune", {})
        for task in tasks:
            table[task] = {}
            for variant in self.variants:
                for seed in self.seeds:
                    wd = self.finetune(pre, task, variant, seed)
                    m = json.load(open(os.path.join(wd, "evals", "kjv_books", "metrics.json")))
                    table[task].setdefault(variant, []).append(float(m[TASKS[task][0]]))
                    self.write_report()  # after every run: a stopped study keeps its tables

    def run_icl(self, pre: dict[str, str]) -> None:
        icl = {"before": self.icl("icl/before", pre["metalm"], "configs/tiny.py")}
        if "a" in self.variants and "kjv_books" in self.tasks:  # the decoder of (a), after
            a = os.path.join(self.out, "finetune", "kjv_books", "a", f"seed{self.seeds[0]}")
            icl["after"] = self.icl(
                "icl/after", a, "configs/tiny.py", ["--config.spans.enc_length=256"]
            )
        self.results["icl"] = icl
        self.write_report()

    def run_multitask(self, pre: dict[str, str]) -> None:
        self.results["multitask"] = {}
        for name, config in (("multitask", "configs/multitask_kjv.py"),
                             ("instruct", "configs/instruct_kjv.py")):  # fmt: skip
            wd = os.path.join(self.out, name)
            args = ["-m", "metalm_jax.train", f"--config={config}", f"--workdir={wd}",
                    f"--config.finetune.from_run={pre['metalm']}",
                    f"--config.train.steps={self.multitask_steps}",
                    f"--config.train.eval_every={self.multitask_steps}",
                    f"--config.train.checkpoint_every={self.multitask_steps}",
                    *self.small()]  # fmt: skip
            if self.smoke:
                args += ["--config.task.eval_examples=4"] + [
                    f"--config.evals.{e}.examples=2"
                    for e in (("multitask",) if name == "multitask" else ("held_out", "tuned"))
                ]
            self.stage(name, args, wd)
            evals = os.path.join(wd, "evals")
            self.results["multitask"][name] = {
                e: json.load(open(os.path.join(evals, e, "metrics.json")))
                for e in sorted(os.listdir(evals))
            }
            self.write_report()

    def write_report(self) -> None:
        self._save()
        r = self.results
        lines = [f"Seeds {self.seeds}; pretraining {self.pre_steps} steps, finetuning "
                 f"{self.ft_steps} steps of {self.ft_batch} rows per run, multitask / instruct "
                 f"{self.multitask_steps} steps.", ""]  # fmt: skip
        for task, by_variant in r.get("finetune", {}).items():
            lines += [f"**{task}** ({TASKS[task][0]}, validation)", "",
                      "| variant | what | mean | min | max | seeds |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for v, xs in by_variant.items():
                lines.append(
                    f"| ({v}) | {VARIANTS[v][2]} | {sum(xs) / len(xs):.3f} | {min(xs):.3f} | "
                    f"{max(xs):.3f} | {len(xs)} |"
                )
            lines.append("")
        lines += ["**In-context testament (k-shot accuracy by option scoring)**", "",
                  "| decoder of (a) | " + " | ".join(f"k={k}" for k in (0, 1, 4)) + " |",
                  "|---|---|---|---|"]  # fmt: skip
        for when, m in r.get("icl", {}).items():
            cells = [f"{m.get(f'{k}shot/accuracy_mean', float('nan')):.3f}" for k in (0, 1, 4)]
            lines.append(f"| {when} encoder finetuning | " + " | ".join(cells) + " |")
        lines.append("")
        for name, evals in r.get("multitask", {}).items():
            for e, m in evals.items():
                lines += [f"**{name}: {e}**", "", m.get("table", ""), ""]
        lines += ["Commands (wall time):", ""]
        lines += [f"- `{v['command']}` ({v['wall_s']} s)" for v in r["runs"].values()]
        with open(os.path.join(self.out, "study.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        self.plot()

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        fig, axes = plt.subplots(1, len(self.tasks), figsize=(6 * len(self.tasks), 4))
        for ax, task in zip(np.atleast_1d(axes), self.tasks, strict=True):
            figure = TASKS[task][0]
            for v in self.variants:
                curves = []
                for seed in self.seeds:
                    path = os.path.join(self.out, "finetune", task, v, f"seed{seed}",
                                        "metrics.jsonl")  # fmt: skip
                    if not os.path.exists(os.path.join(os.path.dirname(path), "study_done.json")):
                        continue  # not run yet
                    pts = {}
                    for line in open(path):
                        rec = json.loads(line)
                        if f"evals/kjv_books/{figure}" in rec:
                            pts[rec["step"]] = rec[f"evals/kjv_books/{figure}"]
                    curves.append(pts)
                if not curves:
                    continue
                steps = sorted(set.intersection(*(set(c) for c in curves)))
                if not steps:
                    continue
                ys = np.array([[c[s] for s in steps] for c in curves])
                ax.plot(steps, ys.mean(0), marker="o", label=f"({v}) {VARIANTS[v][2]}")
                ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.2)
            ax.set(title=task, xlabel="finetuning step", ylabel=f"validation {figure}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(self.out, "study.png"), dpi=110)
        plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/study")
    p.add_argument("--smoke", action="store_true", help="2 steps per run, tiny evals (CI)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--pretrain_steps", type=int, default=400)
    p.add_argument("--finetune_steps", type=int, default=120)
    p.add_argument("--finetune_batch", type=int, default=8, help="rows per finetuning step")
    p.add_argument("--multitask_steps", type=int, default=150, help="multitask / instruct runs")
    p.add_argument("--variants", default=",".join(VARIANTS), help="a subset of a,b,c,d")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"a subset of {','.join(TASKS)}")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    variants, tasks = a.variants.split(","), a.tasks.split(",")
    bad = [v for v in variants if v not in VARIANTS] + [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown variants / tasks {bad}: variants {list(VARIANTS)}, tasks {list(TASKS)}")
    Study(
        a.out, a.smoke, seeds, a.pretrain_steps, a.finetune_steps, variants, tasks,
        a.finetune_batch, a.multitask_steps,
    ).run()  # fmt: skip


if __name__ == "__main__":
    main()
