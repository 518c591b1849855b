"""Multitask mixtures (PAPER.md §4.2, "Multitask finetuning"): many tasks in one training stream.

    task.name = "mixture"
    task.mixture = [dict(name="kjv_books"), dict(name="glue/mnli"), dict(name="squad_v1"), ...]

Each entry is the `task` section with the entry's keys laid over it (name, template_index,
file, max_input_tokens, ...), so one setting can differ per task. Every task contributes at most
`task.cap` training examples (the paper: 30k; a fixed random subset), tasks are sampled in
proportion to those capped sizes, and examples of all tasks are packed into rows together
(T5-style, each its own segment). The template is the entry's `template_index` (0 = the paper's
first template; -1 = one drawn per example: instruction tuning, §3.5).

Clusters and kinds (for per-cluster tables and the metric of each task) come from the task
registry (data/tasks/registry.py); an entry may give its own `cluster` and `kind` (a JSONL task's
are "jsonl" and none).
"""

from __future__ import annotations

import grain
import ml_collections

from metalm_jax.data.tasks.examples import shuffled_indices
from metalm_jax.data.tasks.registry import open_task, task_spec
from metalm_jax.data.tasks.task_rows import TaskPackIterDataset, example_stream

ENTRY_ONLY_KEYS = ("cluster", "kind")  # entry keys that are not task-section keys


def entries(task_cfg) -> list[ml_collections.ConfigDict]:
    """The mixture's tasks, each a full task section (`task` with the entry's overrides)."""
    if task_cfg.name != "mixture":
        return [task_cfg]
    if not task_cfg.mixture:
        raise ValueError("task.name=mixture needs task.mixture: a list of dict(name=..., ...)")
    out = []
    for i, e in enumerate(task_cfg.mixture):
        e = dict(e)
        if not e.get("name") or e["name"] == "mixture":
            raise ValueError(f"task.mixture[{i}]: needs a task name, got {e}")
        unknown = sorted(set(e) - set(task_cfg) - set(ENTRY_ONLY_KEYS))
        if unknown:
            raise ValueError(
                f"task.mixture[{i}] ({e['name']}): unknown keys {unknown}; an entry takes "
                f"task keys ({', '.join(sorted(task_cfg))}) and {ENTRY_ONLY_KEYS}"
            )
        t = task_cfg.copy_and_resolve_references()
        with t.unlocked():
            t.mixture = []
            for k, v in e.items():
                t[k] = v
        out.append(t)
    return out


def cluster_and_kind(task_cfg) -> tuple[str, str]:
    """(cluster, kind) of a task: its entry's, else the registry's."""
    spec = task_spec(task_cfg.name)
    return task_cfg.get("cluster", spec.cluster), task_cfg.get("kind", spec.kind)


class Subset:
    """Random access to `source[indices[i]]`."""

    def __init__(self, source, indices):
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.source[self.indices[i]]


def capped_source(task_cfg, split: str, data_dir, render_size: int, seed: int, cap: int):
    """A task's split, at most `cap` examples (a fixed random subset when it has more)."""
    source = open_task(task_cfg, split, data_dir, render_size, seed)
    if cap and len(source) > cap:
        return Subset(source, sorted(shuffled_indices(len(source), seed)[:cap]))
    return source


def mixture_train_rows(cfg, tok, shard, fmt, make_encoder):
    """Infinite IterDataset of packed rows (data/rows.RowFormat `fmt`) mixing the tasks of
    `cfg.task` (see the module docstring); `make_encoder(task_cfg)` gives each task's
    ExampleEncoder."""
    seed = int(cfg.data.seed)
    cap = int(cfg.task.cap) if cfg.task.name == "mixture" else 0  # a single task: all of it
    streams, sizes = [], []
    for k, t in enumerate(entries(cfg.task)):
        source = capped_source(
            t, t.train_split, cfg.data.tfds_data_dir or None, cfg.images.render_size,
            seed + 7 * k, cap,
        )  # fmt: skip
        streams.append(example_stream(source, make_encoder(t), shard, seed + 7 * k, t.name))
        sizes.append(len(source))
    total = float(sum(sizes))
    mixed = streams[0] if len(streams) == 1 else grain.IterDataset.mix(
        streams, weights=[n / total for n in sizes]
    )  # fmt: skip
    return TaskPackIterDataset(mixed, fmt.builder, bool(cfg.task.pack))


def mixture_eval_examples(cfg) -> list:
    """Fixed validation examples: task.eval_examples in all, shared equally by the tasks."""
    tasks = entries(cfg.task)
    per_task = max(1, int(cfg.task.eval_examples) // len(tasks))
    out = []
    for t in tasks:
        source = open_task(
            t, t.validation_split, cfg.data.tfds_data_dir or None, cfg.images.render_size,
            int(cfg.data.seed),
        )  # fmt: skip
        order = shuffled_indices(len(source), int(cfg.data.seed))[:per_task]
        out += [(t, source[int(i)]) for i in order]
    return out
