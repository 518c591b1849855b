"""The `task` evaluator: a supervised task's split scored by generation and by option scoring.

Prompts are the training examples without their target (data/tasks/task_rows.py, one example per
row): the inputs through the encoders, then optional priming text (`answer_prefix`, decoder
tokens: PAPER.md Fig. 4c), then the model generates greedily up to </s>. Metrics by the task's
kind (`metric`, "auto" picks it):

  exact_match  classification (the task has options): exact match of the free generation (no
               constrained decoding, PAPER.md §4.2), plus option scoring: the option (+ </s>)
               with the highest log-likelihood, as in rank classification (scoring_accuracy),
               and with the highest log-likelihood per token (scoring_accuracy_per_token: no
               bias towards options of fewer tokens)
  token_f1     QA: SQuAD token F1 and exact match against every answer
  vqa          VQA accuracy (metrics.vqa_score: official for 10-answer sets, else a match of
               any answer after the official normalization)
  caption      BLEU / METEOR / ROUGE-L / CIDEr (COCO caption metrics)

The examples are a fixed random sample (`seed`) of `examples` from the split. Writes per-example
predictions (id, prediction, references, and option scores). Built once per run
(eval/evaluators.py): the split opened, the sample drawn, the prompt and option rows laid out;
each eval then generates and scores on the parameters it is given.
"""

from __future__ import annotations

import numpy as np

from metalm_jax.data.rows import Target, Text
from metalm_jax.data.tasks.examples import ImageInput, shuffled_indices
from metalm_jax.eval.labels import generate_labels
from metalm_jax.types import ConfigError


def task_config(cfg, ev):
    """The run's task section with the evaluator's `task` overrides (e.g. another split)."""
    task = cfg.task.copy_and_resolve_references()
    if "task" in ev and ev.task:
        with task.unlocked():
            task.update(dict(ev.task))
    if not task.name:
        raise ConfigError("evals: a `task` evaluator needs task.name (in the config or ev.task)")
    return task


def _metric(ev, task, examples) -> str:
    if ev.metric != "auto":
        return ev.metric
    if task.name == "emoji_captions":
        return "caption"
    if examples and any(isinstance(x, ImageInput) for x in examples[0].inputs):
        return "vqa"
    if examples and all(ex.options for ex in examples):
        return "exact_match"
    return "token_f1"


MAIN_METRIC = {  # metric -> the figure a task reports
    "exact_match": "generation_accuracy",
    "token_f1": "token_f1",
    "vqa": "vqa_accuracy",
    "caption": "ROUGE_L",
}


def task_evaluator(ev, trainer, tok, cfg, derived, task=None):
    """Builds the evaluator of the task `task` (a task section; default: the run's task with
    `ev.task` overrides) on `ev.split`: evaluate(params) -> (metrics, predictions). `derived`:
    the run's model/build.derive."""
    from metalm_jax.data.feed.pipeline import example_encoder
    from metalm_jax.data.tasks.registry import open_task
    from metalm_jax.data.tasks.task_rows import encode_prompt
    from metalm_jax.eval.scoring import row_logliks

    task = task_config(cfg, ev) if task is None else task
    source = open_task(task, ev.split, cfg.data.tfds_data_dir or None, cfg.images.render_size)
    n = min(int(ev.examples), len(source))
    examples = [source[int(i)] for i in shuffled_indices(len(source), int(ev.seed))[:n]]
    metric = _metric(ev, task, examples)
    if metric not in MAIN_METRIC:
        raise ConfigError(
            f"evals: task metric {metric!r}: expected auto | exact_match | token_f1 | vqa | caption"
        )
    fmt = derived.rows
    encoder = example_encoder(cfg, tok, fmt, task=task)
    seq_len = int(ev.seq_len or cfg.data.seq_len)
    priming = [Text(encode_prompt(tok, ev.answer_prefix))] if ev.answer_prefix else []

    def row(pieces):
        b = fmt.builder(seq_len)
        b.add(pieces)
        return b.row()

    prompts = [encoder.input_pieces(ex) + priming for ex in examples]
    prompt_rows = [row(p) for p in prompts]
    sampling = None
    if ev.get("beam", 1) > 1:  # e.g. generation tasks: beam 4, alpha 0.6 (PAPER.md §4.2)
        from metalm_jax.eval.decode import SamplingConfig

        sampling = SamplingConfig(
            beam=int(ev.beam), length_penalty=float(ev.get("length_penalty", 0.6))
        )
    # what scoring needs of the examples; their inputs (images too) are held only as rows
    ids = [ex.id for ex in examples]
    refs = [list(ex.references) for ex in examples]
    options = [(list(ex.options), ex.target) for ex in examples]
    scoring = metric == "exact_match" and ev.scoring  # each example ranks its own options
    option_rows = lengths = cuts = None
    if scoring:
        option_rows = [
            row(p + [Target(encoder.target_ids(o))])
            for p, ex in zip(prompts, examples, strict=True)
            for o in ex.options
        ]
        lengths = np.array(
            [len(encoder.target_ids(o)) for ex in examples for o in ex.options], np.float64
        )
        cuts = np.cumsum([len(ex.options) for ex in examples])[:-1]

    def evaluate(params):
        gen = generate_labels(trainer, params, tok, prompt_rows, ev, ev.max_tokens, sampling)
        preds = [
            {"id": i, "prediction": g, "references": list(r)}
            for i, g, r in zip(ids, gen, refs, strict=True)
        ]
        metrics: dict = {"examples": n, "metric": metric}
        if metric == "exact_match":
            from metalm_jax.eval.metrics import exact_match

            em = [exact_match(g, r) for g, r in zip(gen, refs, strict=True)]
            metrics["generation_accuracy"] = float(np.mean(em))
            if scoring:
                flat = row_logliks(trainer.model, params, option_rows, ev.batch_size)
                right, right_norm = [], []
                for p, (opts, target), s, k in zip(
                    preds, options, np.split(flat, cuts), np.split(lengths, cuts), strict=True
                ):
                    best = opts[int(np.argmax(s))]
                    right.append(best == target)
                    right_norm.append(opts[int(np.argmax(s / k))] == target)
                    p["option_scores"] = [round(float(x), 4) for x in s]
                    p["scored"] = best
                metrics["scoring_accuracy"] = float(np.mean(right))
                metrics["scoring_accuracy_per_token"] = float(np.mean(right_norm))
            for p, e in zip(preds, em, strict=True):
                p["correct"] = bool(e)
        elif metric == "token_f1":
            from metalm_jax.eval.metrics import exact_match, token_f1

            metrics["token_f1"] = float(
                np.mean([token_f1(g, r) for g, r in zip(gen, refs, strict=True)])
            )
            metrics["exact_match"] = float(
                np.mean([exact_match(g, r) for g, r in zip(gen, refs, strict=True)])
            )
        elif metric == "vqa":
            from metalm_jax.eval.metrics import vqa_score

            accs = [vqa_score(g, r) for g, r in zip(gen, refs, strict=True)]
            metrics["vqa_accuracy"] = float(np.mean(accs))
            for p, a in zip(preds, accs, strict=True):
                p["accuracy"] = a
        else:  # caption
            from metalm_jax.eval.metrics import caption_metrics

            hyps = dict(zip(ids, gen, strict=True))
            metrics.update(
                caption_metrics(hyps, dict(zip(ids, refs, strict=True)),
                                meteor=bool(ev.get("meteor", False)))
            )  # fmt: skip
        return metrics, preds

    return evaluate
