"""The `multitask` evaluator: every task of a mixture in the paper's way, with a cluster table.

PAPER.md §4.2: multiple-choice tasks by exact match of the free generation (no constrained
decoding), QA by token F1 with greedy decoding, generation by ROUGE-L with beam 4 and length
penalty 0.6. A task's kind and cluster, and its evaluation templates, come from the task
registry (data/tasks/registry.py; an entry's own `cluster` and `kind` through
data/tasks/mixture.cluster_and_kind). With `templates` = N > 1 (instruction tuning, §3.5) each
task is evaluated with its first N evaluation templates (`TaskSpec.eval_templates`: not the
"turned around" ones) and both the mean and the best are reported. Cluster figures are the mean
over the cluster's tasks; `average` over all tasks.

Metrics: `<task>/<figure>` (the mean over templates), `<task>/<figure>_best`,
`cluster/<cluster>`, `cluster/<cluster>_best`, `average`, and `table` (markdown). Built once per
run: every (task, template) is a task evaluator built up front, so each eval only generates.
"""

from __future__ import annotations

import numpy as np

from metalm_jax.types import ConfigError

METRIC_OF_KIND = {"classification": "exact_match", "qa": "token_f1", "generation": "caption"}


def eval_template_indices(task_cfg, n: int) -> list[int]:
    """The template indices to evaluate a task with: its own (n <= 1), or its first n
    evaluation templates (the registry's; one for a task with one prompt)."""
    from metalm_jax.data.tasks.registry import task_spec

    if n <= 1:
        return [max(int(task_cfg.template_index), 0)]
    return list(task_spec(task_cfg.name).eval_templates[:n])


def multitask_evaluator(ev, trainer, tok, cfg, derived):
    """Builds one task evaluator (eval/task_eval.py) per task and evaluation template, once;
    evaluate(params) runs them all and assembles the figures and the cluster table."""
    from metalm_jax.data.tasks.mixture import cluster_and_kind, entries
    from metalm_jax.eval.task_eval import MAIN_METRIC, task_evaluator

    base = cfg.task.copy_and_resolve_references()
    if ev.tasks:
        with base.unlocked():
            base.name, base.mixture = "mixture", [dict(t) for t in ev.tasks]
    tasks = entries(base)
    if not tasks or not tasks[0].name:
        raise ConfigError("evals: a multitask evaluator needs task.mixture or its own `tasks`")
    built = []  # (task name, cluster, [(template index, its evaluator)])
    for t in tasks:
        cluster, kind = cluster_and_kind(t)
        metric = METRIC_OF_KIND.get(kind, "auto")
        per_template = []
        for k in eval_template_indices(t, int(ev.templates)):
            tk = t.copy_and_resolve_references()
            with tk.unlocked():
                tk.template_index = k
            sub = ev.copy_and_resolve_references()
            with sub.unlocked():
                sub.metric = metric
                sub.scoring = False  # the paper: exact match of the free generation
                sub.beam = int(ev.generation_beam) if kind == "generation" else 1
                sub.answer_prefix = ""
                sub.meteor = False
            per_template.append((k, task_evaluator(sub, trainer, tok, cfg, derived, task=tk)))
        built.append((t.name, cluster, per_template))

    def evaluate(params):
        metrics: dict = {}
        preds: list = []
        rows, clusters = [], {}
        for name, cluster, per_template in built:
            figure_scores = []
            figure = None
            for k, evaluate_template in per_template:
                m, p = evaluate_template(params)
                figure = MAIN_METRIC[m["metric"]]
                figure_scores.append(float(m[figure]))
                preds += [{**x, "task": name, "template": k} for x in p]
            mean, best = float(np.mean(figure_scores)), float(np.max(figure_scores))
            metrics[f"{name}/{figure}"] = mean
            metrics[f"{name}/{figure}_best"] = best
            rows.append((cluster, name, figure, mean, best, len(figure_scores)))
            clusters.setdefault(cluster, []).append((mean, best))
        for c, vals in clusters.items():
            metrics[f"cluster/{c}"] = float(np.mean([v[0] for v in vals]))
            metrics[f"cluster/{c}_best"] = float(np.mean([v[1] for v in vals]))
        metrics["average"] = float(np.mean([r[3] for r in rows]))
        metrics["table"] = _table(rows, metrics)
        return metrics, preds

    return evaluate


def _table(rows, metrics) -> str:
    lines = [
        "| cluster | task | metric | mean | best | templates |",
        "|---|---|---|---|---|---|",
    ]
    for cluster, name, figure, mean, best, n in sorted(rows):
        lines.append(f"| {cluster} | {name} | {figure} | {mean:.4f} | {best:.4f} | {n} |")
    for key in sorted(k for k in metrics if k.startswith("cluster/") and not k.endswith("_best")):
        c = key.split("/", 1)[1]
        lines.append(
            f"| **{c}** | (mean) | | {metrics[key]:.4f} | {metrics[key + '_best']:.4f} | |"
        )
    return "\n".join(lines)
