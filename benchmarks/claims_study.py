"""The paper's central claims, measured at a size this CPU trains (issues 11 and 22, PAPER.md §0,
§5).

    python benchmarks/claims_study.py --out runs/study            # the whole study (hours)
    python benchmarks/claims_study.py --out /tmp/smoke --smoke    # 2 steps per run (CI)
    python benchmarks/claims_study.py --out runs/study_v2 --pretrain_steps 1600 \
        --finetune_steps 300 --seeds 0,1 --lr_grid "a=1e-3,3e-3;b=3e-4,1e-3;c=1.2e-3,4e-3"

Every run is an ordinary `python -m metalm_jax.train` / `evaluate` call on a config in configs/,
with overrides; a run whose `study_done.json` exists is skipped, so the study resumes where it
stopped. Stages:

  pretrain   metalm (configs/tiny.py: semi-causal), gpt (the same decoder with
             text_encoder.enabled=False: a causal LM on the same data for the same steps),
             minilm (configs/tiny_minilm.py: the pretrained MiniLM docked, frozen but its top
             two layers, those at 0.025 x the LR); the gate: minilm's held-out loss must beat
             metalm's, else the decoder has not learned to read MiniLM and (c) is not
             interpreted
  finetune   per task (kjv_books: accuracy by generation; kjv_completion: token F1), variant,
             LR of the grid (--lr_grid: (c)'s MiniLM layers train at 0.025 x the LR, carried
             from its pretraining: training/finetune.py) and seed: (a) metalm, decoder frozen;
             (b) gpt, full finetuning with the task input in the decoder; (c) minilm, decoder
             frozen; (d) metalm, connector only (a floor). The LR of each variant is chosen on
             validation (the mean over seeds of the last eval); its runs are then evaluated on
             the test split, never used for choosing
  icl        the testament task in context at k = 0, 1, 4 (cue "A:", options ranked by
             calibrated, per-piece and summed log-likelihood), with the decoder of (a) before
             (the pretrained metalm) and after its encoder finetuning, and before with every
             demonstration's label flipped (a model that learns from demonstrations follows
             them)
  multitask  configs/multitask_kjv.py and configs/instruct_kjv.py (held-out cluster) from metalm

Writes `<out>/study.json` (every figure), `<out>/study.md` (the tables with the majority rate of
each evaluated sample, chapter-bootstrap 95% intervals and macro-F1 on test, each with the
command that made its runs) and `<out>/study.png` (validation figure vs finetuning step for
(a)-(d) at their chosen LR, mean and min-max band over seeds).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

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
SHOTS = (0, 1, 4)
MODES = ("calibrated", "mean", "sum")  # the icl evaluator's option scoring (eval/scoring.py)
BOOTSTRAP = 2000  # chapter resamples per interval


def _run(args: list[str], workdir: str, log: str) -> float:
    """Runs a metalm_jax CLI; returns its wall time. Raises with the log's tail on failure."""
    t = time.time()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc:
        tail = open(log).read()[-3000:]
        raise SystemExit(f"{' '.join(args)} failed (rc {rc}); see {log}:\n{tail}")
    return time.time() - t


def parse_lr_grid(text: str, default: float) -> dict[str, list[float]]:
    """ "a=1e-3,3e-3;c=1.2e-3" -> {variant: [LR, ...]}; variants not named get [default]."""
    grid = {v: [default] for v in VARIANTS}
    for part in filter(None, (x.strip() for x in text.split(";"))):
        name, _, values = part.partition("=")
        if name.strip() not in VARIANTS or not values:
            raise ValueError(f"--lr_grid: {part!r}: expected <variant>=<lr>,<lr>,... ({VARIANTS})")
        grid[name.strip()] = [float(x) for x in values.split(",")]
    return grid


def _example_scores(preds: list[dict], figure: str) -> list[float]:
    """Per-example figure of a task evaluator's predictions (evals/<name>/predictions.jsonl)."""
    from metalm_jax.eval.metrics import token_f1

    if figure == "token_f1":
        return [token_f1(p["prediction"], p["references"]) for p in preds]
    return [float(p["correct"]) for p in preds]


def chapter_interval(per_seed: list[list[dict]], figure: str, seed: int = 0) -> list[float]:
    """95% percentile interval of the seed-mean figure over resamples of whole chapters (verses
    of a chapter are not independent): every seed's predictions share the same verses."""
    chapter = lambda p: p["id"].rsplit(":", 1)[0]
    chapters = sorted({chapter(p) for p in per_seed[0]})
    index = {c: i for i, c in enumerate(chapters)}
    scores = [np.asarray(_example_scores(ps, figure)) for ps in per_seed]
    of = np.asarray([index[chapter(p)] for p in per_seed[0]])
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(BOOTSTRAP):
        weight = np.bincount(rng.integers(len(chapters), size=len(chapters)),
                             minlength=len(chapters))[of]  # fmt: skip
        stats.append(np.mean([np.sum(weight * x) / max(weight.sum(), 1) for x in scores]))
    return [float(np.percentile(stats, 2.5)), float(np.percentile(stats, 97.5))]


def majority_rate(preds: list[dict]) -> float:
    """The share of the evaluated sample's most frequent reference (classification)."""
    counts = collections.Counter(p["references"][0] for p in preds)
    return counts.most_common(1)[0][1] / len(preds)


def macro_f1(preds: list[dict]) -> float:
    """Macro-F1 over the gold labels: a generation is the label it exactly matches, if any."""
    from metalm_jax.eval.metrics import exact_match

    golds = [p["references"][0] for p in preds]
    labels = sorted(set(golds))
    said = [next((x for x in labels if exact_match(p["prediction"], [x])), None) for p in preds]
    f1s = []
    for x in labels:
        tp = sum(g == x and s == x for g, s in zip(golds, said, strict=True))
        fp = sum(g != x and s == x for g, s in zip(golds, said, strict=True))
        fn = sum(g == x and s != x for g, s in zip(golds, said, strict=True))
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1s))


def _read_evals(directory: str) -> tuple[dict, list[dict]]:
    metrics = json.load(open(os.path.join(directory, "metrics.json")))
    with open(os.path.join(directory, "predictions.jsonl")) as f:
        return metrics, [json.loads(line) for line in f]


def _final_eval_loss(workdir: str) -> float | None:
    """The last held-out loss a run logged (metrics.jsonl), or None."""
    loss = None
    for line in open(os.path.join(workdir, "metrics.jsonl")):
        rec = json.loads(line)
        loss = rec.get("eval/loss", loss)
    return loss


class Study:
    def __init__(
        self, out: str, smoke: bool, seeds: list[int], pre_steps: int, ft_steps: int,
        variants=tuple(VARIANTS), tasks=tuple(TASKS), ft_batch: int = 8, multitask_steps: int = 150,
        lr_grid: dict | None = None,
    ):  # fmt: skip
        self.out, self.smoke, self.seeds = os.path.abspath(out), smoke, seeds
        self.variants, self.tasks = list(variants), list(tasks)
        self.pre_steps, self.ft_steps = (2, 2) if smoke else (pre_steps, ft_steps)
        self.eval_every = max(1, self.ft_steps // 3)  # three points per curve
        self.ft_batch, self.multitask_steps = ft_batch, (2 if smoke else multitask_steps)
        self.lr_grid = lr_grid or parse_lr_grid("", 1e-3)
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

    def stage(self, key: str, args: list[str], workdir: str, keep=()) -> dict:
        """Runs `args` into `workdir` unless done; returns its record. `keep`: (name, evals
        directory) pairs copied into <workdir>/kept/<name> right after the run, so a later
        command that writes the same evaluator's files elsewhere does not change what this
        stage measured."""
        done = os.path.join(workdir, "study_done.json")
        if os.path.exists(done):
            rec = json.load(open(done))
        else:
            os.makedirs(workdir, exist_ok=True)
            print(f"== {key}: python {' '.join(args)}", flush=True)
            wall = _run(args, workdir, os.path.join(workdir, "study.log"))
            for name, src in keep:
                shutil.copytree(src, os.path.join(workdir, "kept", name), dirs_exist_ok=True)
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
            if self.smoke:  # a 2 x 32 decoder (and encoder): compiles in seconds; tiny's
                # 4k vocabulary, where the label words are one piece each and the multitask
                # template's listed options fit the input (with 400 pieces they are 75 tokens)
                args += [
                    "--config.model.decoder.num_layers=2", "--config.model.decoder.d_model=32",
                    "--config.model.decoder.d_ff=64",
                ]  # fmt: skip
                if name != "minilm":
                    args += ["--config.model.text_encoder.num_layers=1",
                             "--config.model.text_encoder.d_model=32"]  # fmt: skip
            self.stage(f"pretrain/{name}", args, wd)
            runs[name] = wd
        self.results["pretrain_loss"] = {n: _final_eval_loss(w) for n, w in runs.items()}
        return runs

    def run_dir(self, task: str, variant: str, lr: float, seed: int) -> str:
        return os.path.join(self.out, "finetune", task, variant, f"lr{lr:g}", f"seed{seed}")

    def task_args(self, task: str, extra=()) -> list[str]:
        return [f"--config.task.name={task}", *FINETUNE_EVAL, *TASKS[task][1], *extra]

    def finetune(self, pre: dict[str, str], task: str, variant: str, lr: float, seed: int):
        """One finetuning run; (its validation metrics, predictions) as it left them."""
        source, preset, _ = VARIANTS[variant]
        wd = self.run_dir(task, variant, lr, seed)
        args = [
            "-m", "metalm_jax.train", f"--config=configs/finetune_kjv_books.py:{pre[source]}",
            f"--workdir={wd}", f"--config.finetune.preset={preset}", f"--config.optim.lr={lr}",
            f"--config.seed={seed}", f"--config.data.seed={seed}",
            f"--config.train.steps={self.ft_steps}", f"--config.train.eval_every={self.eval_every}",
            f"--config.train.checkpoint_every={self.ft_steps}",
            f"--config.train.batch_size={self.ft_batch}", *self.task_args(task), *self.small(),
        ]  # fmt: skip
        if self.smoke:
            args += ["--config.evals.kjv_books.examples=4", "--config.task.eval_examples=4"]
        key = f"finetune/{task}/{variant}/lr{lr:g}/seed{seed}"
        self.stage(key, args, wd, keep=[("validation", os.path.join(wd, "evals", "kjv_books"))])
        return _read_evals(os.path.join(wd, "kept", "validation"))

    def test_eval(self, pre: dict[str, str], task: str, variant: str, lr: float, seed: int):
        """The chosen run on the whole test split; (metrics, predictions)."""
        source = VARIANTS[variant][0]
        wd = self.run_dir(task, variant, lr, seed)
        n = 4 if self.smoke else 100_000  # every test example
        args = [
            "-m", "metalm_jax.evaluate", f"--config=configs/finetune_kjv_books.py:{pre[source]}",
            f"--workdir={wd}", "--only=kjv_books",
            *self.task_args(task, ["--config.evals.kjv_books.split=test",
                                   f"--config.evals.kjv_books.examples={n}"]),
        ]  # fmt: skip
        key = f"test/{task}/{variant}/lr{lr:g}/seed{seed}"
        stage_dir = os.path.join(self.out, key)
        self.stage(key, args, stage_dir, keep=[("test", os.path.join(wd, "evals", "kjv_books"))])
        return _read_evals(os.path.join(stage_dir, "kept", "test"))

    def icl(self, key: str, workdir: str, config: str, extra=()) -> dict:
        args = ["-m", "metalm_jax.evaluate", f"--config={config}", f"--workdir={workdir}",
                "--only=kjv_testament", *self.small_model(workdir), *extra]  # fmt: skip
        if self.smoke:
            args += ["--config.evals.kjv_testament.examples=4",
                     "--config.evals.kjv_testament.trials=1"]  # fmt: skip
        stage_dir = os.path.join(self.out, key)
        src = os.path.join(workdir, "evals", "kjv_testament")
        self.stage(key, args, stage_dir, keep=[("icl", src)])
        return _read_evals(os.path.join(stage_dir, "kept", "icl"))[0]

    def run(self) -> None:
        """The first task's grid, then in-context learning and the multitask runs, then the other
        tasks: a study stopped early has one complete comparison first."""
        pre = self.pretrain()
        self.finetune_grid(pre, self.tasks[:1])
        self.run_icl(pre)
        self.run_multitask(pre)
        self.finetune_grid(pre, self.tasks[1:])

    def finetune_grid(self, pre: dict[str, str], tasks: list[str]) -> None:
        """Every (variant, LR, seed) run on validation, then each variant's LR with the best
        seed-mean validation figure evaluated on test."""
        table = self.results.setdefault("finetune", {})
        tests = self.results.setdefault("test", {})
        for task in tasks:
            figure = TASKS[task][0]
            table[task] = {}
            for variant in self.variants:
                for lr in self.lr_grid[variant]:
                    for seed in self.seeds:
                        m, _ = self.finetune(pre, task, variant, lr, seed)
                        by_lr = table[task].setdefault(variant, {})
                        by_lr.setdefault(f"{lr:g}", []).append(float(m[figure]))
                        self.write_report()  # after every run: a stopped study keeps its tables
            tests[task] = {}
            for variant, by_lr in table[task].items():
                best = max(by_lr, key=lambda lr: np.mean(by_lr[lr]))
                runs = [self.test_eval(pre, task, variant, float(best), s) for s in self.seeds]
                preds = [p for _, p in runs]
                rec = {
                    "lr": best,
                    "figures": [float(m[figure]) for m, _ in runs],
                    "interval": chapter_interval(preds, figure),
                    "examples": len(preds[0]),
                }
                if figure == "generation_accuracy":
                    rec["majority"] = majority_rate(preds[0])
                    rec["macro_f1"] = float(np.mean([macro_f1(p) for p in preds]))
                tests[task][variant] = rec
                self.write_report()

    def run_icl(self, pre: dict[str, str]) -> None:
        icl = {"before": self.icl("icl/before", pre["metalm"], "configs/tiny.py")}
        icl["before, flipped labels"] = self.icl(
            "icl/before_flipped", pre["metalm"], "configs/tiny.py",
            ["--config.evals.kjv_testament.demo_labels=flipped"],
        )  # fmt: skip
        if "a" in self.variants and "kjv_books" in self.tasks:  # the decoder of (a), after
            lr = self.results.get("test", {}).get("kjv_books", {}).get("a", {}).get("lr")
            lr = float(lr) if lr else self.lr_grid["a"][0]
            a = self.run_dir("kjv_books", "a", lr, self.seeds[0])
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
                 f"{self.ft_steps} steps of {self.ft_batch} rows per run (LR grid "
                 f"{ {v: self.lr_grid[v] for v in self.variants} }), multitask / instruct "
                 f"{self.multitask_steps} steps.", ""]  # fmt: skip
        losses = r.get("pretrain_loss", {})
        if losses:
            lines += ["**Pretraining** (final held-out loss): " + ", ".join(
                f"{n} {x:.3f}" for n, x in losses.items() if x is not None)]  # fmt: skip
            if losses.get("minilm") is not None and losses.get("metalm") is not None:
                passed = losses["minilm"] < losses["metalm"]
                lines.append(
                    "Gate (MiniLM's held-out loss below the small encoder's): "
                    + ("passed." if passed else "FAILED: the decoder has not learned to read "
                       "MiniLM; (c) is not interpreted.")
                )  # fmt: skip
            lines.append("")
        for task, by_variant in r.get("finetune", {}).items():
            lines += [f"**{task}** ({TASKS[task][0]}, validation: mean over seeds per LR)", "",
                      "| variant | what | LR | mean | min | max | seeds |",
                      "|---|---|---|---|---|---|---|"]  # fmt: skip
            for v, by_lr in by_variant.items():
                for lr, xs in by_lr.items():
                    lines.append(
                        f"| ({v}) | {VARIANTS[v][2]} | {lr} | {np.mean(xs):.3f} | {min(xs):.3f} "
                        f"| {max(xs):.3f} | {len(xs)} |"
                    )
            lines.append("")
            tested = r.get("test", {}).get(task, {})
            if tested:
                lines += [f"**{task}** on test (the LR chosen on validation; chapter-bootstrap "
                          "95% interval of the seed mean)", "",
                          "| variant | LR | mean | 95% interval | per seed | majority rate | "
                          "macro-F1 | examples |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
                for v, t in tested.items():
                    lo, hi = t["interval"]
                    maj = f"{t['majority']:.3f}" if "majority" in t else "—"
                    f1 = f"{t['macro_f1']:.3f}" if "macro_f1" in t else "—"
                    per = ", ".join(f"{x:.3f}" for x in t["figures"])
                    lines.append(
                        f"| ({v}) | {t['lr']} | {np.mean(t['figures']):.3f} | "
                        f"[{lo:.3f}, {hi:.3f}] | {per} | {maj} | {f1} | {t['examples']} |"
                    )
                lines.append("")
        lines += ["**In-context testament** (k-shot accuracy, balanced: majority rate 0.500; "
                  "options ranked calibrated / per piece / summed)", "",
                  "| decoder | " + " | ".join(f"k={k}" for k in SHOTS) + " |",
                  "|---|" + "---|" * len(SHOTS)]  # fmt: skip
        for when, m in r.get("icl", {}).items():
            cells = [" / ".join(f"{m.get(f'{k}shot/{mode}/accuracy_mean', float('nan')):.3f}"
                                for mode in MODES) for k in SHOTS]  # fmt: skip
            lines.append(f"| {when} | " + " | ".join(cells) + " |")
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

        fig, axes = plt.subplots(1, len(self.tasks), figsize=(6 * len(self.tasks), 4))
        for ax, task in zip(np.atleast_1d(axes), self.tasks, strict=True):
            figure = TASKS[task][0]
            chosen = self.results.get("test", {}).get(task, {})
            for v in self.variants:
                lr = float(chosen[v]["lr"]) if v in chosen else self.lr_grid[v][0]
                curves = []
                for seed in self.seeds:
                    path = os.path.join(self.run_dir(task, v, lr, seed), "metrics.jsonl")
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
                ax.plot(steps, ys.mean(0), marker="o", label=f"({v}) {VARIANTS[v][2]}, lr {lr:g}")
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
    p.add_argument(
        "--lr", type=float, default=1e-3, help="finetuning LR of variants not in the grid"
    )
    p.add_argument(
        "--lr_grid", default="",
        help='finetuning LRs per variant, "a=1e-3,3e-3;c=1.2e-3,4e-3" (chosen on validation; '
        "(c)'s MiniLM layers train at 0.025 x the LR)",
    )  # fmt: skip
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    variants, tasks = a.variants.split(","), a.tasks.split(",")
    bad = [v for v in variants if v not in VARIANTS] + [t for t in tasks if t not in TASKS]
    if bad:
        p.error(f"unknown variants / tasks {bad}: variants {list(VARIANTS)}, tasks {list(TASKS)}")
    try:
        grid = parse_lr_grid(a.lr_grid, a.lr)
    except ValueError as e:
        p.error(str(e))
    Study(
        a.out, a.smoke, seeds, a.pretrain_steps, a.finetune_steps, variants, tasks,
        a.finetune_batch, a.multitask_steps, grid,
    ).run()  # fmt: skip


if __name__ == "__main__":
    main()
