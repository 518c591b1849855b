"""Evaluators chosen by name in the config's `evals` section (`evals.<name>.type`), each writing
`<workdir>/evals/<name>/metrics.json` and per-example `predictions.jsonl`.

An evaluator is built once per run and then run on parameters: each type below is a builder
`(ev, trainer, tok, cfg, derived) -> evaluate`, and `evaluate(params) -> (metrics, predictions)`.
The builder does all that does not depend on the parameters (checks the evaluator's keys, opens
its data, picks the examples, draws the demonstrations, tokenizes and lays out the prompt rows);
`evaluate` only runs the model and scores. The loop evaluates every `train.eval_every` steps, so
the setup is paid once per run, not once per eval; and every draw is made at build time with the
seeds the evaluator always used, so each eval of a run sees the same prompts and the figures
compare. The price: the prompt rows stay in host memory between evals (icl_classification:
examples x options x trials rows; multitask: tasks x templates x examples rows).
`build_evals` builds the configured evaluators (`Evals`); `run_evals` builds and runs them once.

  perplexity          held-out loss / perplexity on the fixed validation batches
  icl_classification  in-context classification by option scoring (summed, per piece and
                      calibrated against a content-free input) and by generation (exact match of
                      a greedy continuation), k-shot prompts with every demonstration encoded
                      separately with the cue ("A:", the paper's Fig. 4d; eval/prompts.py);
                      tasks: kjv_testament (does a KJV verse come from the Old or the New
                      Testament?)
  captioning          captions for held-out images, COCO metrics; the paper's zero-shot protocol
                      by default (PAPER.md §4.3: "Summarize this image:" in the encoder with the
                      image, greedy); prompt="caption:" for a run finetuned in the paper's format,
                      prompt="", beam=4 for the old behaviour
  vqa                 k-shot VQA by generation, each image encoded with its question; VQA accuracy;
                      the paper's protocol by default (PAPER.md §4.3-4.4: "Question: {question}
                      Answer:", demonstrations from a training split), template="{question}",
                      demos="eval" for the old behaviour
  completion          held-out KJV verse completion by generation; token F1 and exact match
"""

from __future__ import annotations

import json
import os

import numpy as np
from etils import epath

from metalm_jax import paths
from metalm_jax.eval.labels import generate_labels
from metalm_jax.eval.metrics import exact_match
from metalm_jax.types import ConfigError, DataError


def _write(workdir, name, metrics, predictions):
    """<workdir>/evals/<name>/{metrics.json, predictions.jsonl}; the workdir local or a URL."""
    d = epath.Path(workdir) / "evals" / name
    paths.write_atomic(d / "metrics.json", json.dumps(metrics, indent=2))
    paths.write_atomic(d / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in predictions))


def kjv_testament_task(n_items: int, seed: int):
    """(pool, items, options): verses labelled 0 = Old / 1 = New; items balanced, from the
    held-out chapters (the KjvBible validation rule), the pool from the training chapters."""
    from metalm_jax.data.corpora.text import kjv_chapters, kjv_held_out

    books_ot = 39
    order, pool, held = [], [], []
    for i, (name, verses) in enumerate(kjv_chapters()):
        book = name.rsplit(" ", 1)[0]
        if book not in order:
            order.append(book)
        label = 0 if order.index(book) < books_ot else 1
        target = held if kjv_held_out(i) else pool
        target.extend((f"{name}:{v + 1}", text, label) for v, text in enumerate(verses))
    rng = np.random.default_rng(seed)
    items = []
    for label in (0, 1):
        cands = [x for x in held if x[2] == label]
        items += [cands[j] for j in rng.choice(len(cands), n_items // 2, replace=False)]
    return pool, items, ["Old", "New"]


def _icl_settings(ev) -> tuple[tuple[str, ...], str, str, str]:
    """(scoring modes, cue, content-free input, demonstration labels) of an icl_classification
    section; a section saved before these keys existed gets the old behaviour (summed scores,
    no cue, gold labels)."""
    from metalm_jax.eval.scoring import SCORING_MODES

    modes = ev.get("scoring", ("sum",))
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in SCORING_MODES]
    if not modes or bad:
        raise ConfigError(
            f"evals: icl_classification scoring={modes}: expected modes of {SCORING_MODES}"
        )
    labels = ev.get("demo_labels", "gold")
    if labels not in ("gold", "flipped"):
        raise ConfigError(
            f"evals: icl_classification demo_labels={labels!r}: expected 'gold' or 'flipped'"
        )
    return modes, ev.get("cue", ""), ev.get("content_free", "N/A"), labels


def _check_icl_positions(ev, cfg, derived, longest: int) -> None:
    """An in-context input (+ <s>) must stay within the encoder positions pretraining trained
    (training/finetune.trained_encoder_positions): past them the rows are random."""
    from metalm_jax.training.finetune import trained_encoder_positions

    trained = trained_encoder_positions(cfg) if derived.rows.text_encoder else None
    bos = int(cfg.spans.enc_bos)
    if trained is not None and longest + bos > trained:
        raise ConfigError(
            f"evals: icl_classification ({ev.task}) max_input_tokens={longest} (+ <s>) reaches "
            f"text-encoder positions {trained}-{longest + bos - 1}, which pretraining never "
            f"trained (spans.max_len={cfg.spans.max_len} + <s>): set its max_input_tokens <= "
            f"{trained - bos}"
        )


def icl_classification(ev, trainer, tok, cfg, derived):
    """Builds the k-shot classification rows once: every trial's demonstrations (seeded by
    `ev.seed` and the trial) with one row per option, the same with the content-free input in
    place of the query (for calibrated scoring), and trial 0's rows for generation.

    Each input (demonstration or query) is the verse cut to max_input_tokens less the cue, then
    the cue (`cue`, e.g. "A:" as in the paper's Fig. 4d: `Enc("Great! A:") Positive ...`), all in
    the encoder; labels are decoder text. Options are ranked by every mode of `scoring`
    (eval/scoring.option_scores: sum, mean, calibrated), each reported as
    `<k>shot/<mode>/accuracy_mean|std`; `<k>shot/accuracy_mean|std` is the first mode's.
    demo_labels="flipped" gives every demonstration the other label: a model that learns from
    its demonstrations follows them, one that ignores them does not move (the ICL gate)."""
    from metalm_jax.data.tasks.task_rows import encode_prompt
    from metalm_jax.eval.prompts import build_icl_row
    from metalm_jax.eval.scoring import option_scores, row_logliks

    if ev.task != "kjv_testament":
        raise ConfigError(f"evals: unknown icl task {ev.task!r}; expected 'kjv_testament'")
    modes, cue, content_free, demo_labels = _icl_settings(ev)
    cue_ids = encode_prompt(tok, cue) if cue else []
    budget = int(ev.max_input_tokens) - len(cue_ids)
    if budget < 1:
        raise ConfigError(
            f"evals: icl_classification cue {cue!r} takes {len(cue_ids)} of max_input_tokens="
            f"{ev.max_input_tokens}: raise max_input_tokens or shorten the cue"
        )
    _check_icl_positions(ev, cfg, derived, int(ev.max_input_tokens))
    pool, items, options = kjv_testament_task(ev.examples, ev.seed)
    opt_ids = [tok.encode(o) for o in options]
    lengths = np.array([len(o) for o in opt_ids], np.float64)
    cut = lambda text: tok.encode(text)[:budget] + cue_ids
    blank = cut(content_free)
    calibrate = "calibrated" in modes
    shown = lambda label: (label + 1) % len(options) if demo_labels == "flipped" else label
    encoding = derived.rows.encoding  # inputs are encoded as spans are in training
    row = lambda d, q, o: build_icl_row(d, q, o, ev.seq_len, ev.enc_len, encoding, tok.ids)
    golds = np.asarray([label for _, _, label in items])
    shots = []  # (k, [(option rows, content-free rows, generation rows: trial 0) per trial])
    for k in ev.shots:
        trials = []
        for trial in range(ev.trials if k else 1):
            rng = np.random.default_rng(ev.seed * 1000 + trial)
            rows, cf_rows, gen_rows = [], [], []
            for _rid, text, _label in items:
                demos = [pool[j] for j in rng.choice(len(pool), k, replace=False)] if k else []
                d = [(cut(t), opt_ids[shown(lab)]) for _, t, lab in demos]
                rows += [row(d, cut(text), o) for o in opt_ids]
                if calibrate:
                    cf_rows += [row(d, blank, o) for o in opt_ids]
                if trial == 0:
                    gen_rows.append(row(d, cut(text), []))
            trials.append((rows, cf_rows, gen_rows))
        shots.append((k, trials))
    shape = (len(items), len(options))

    def evaluate(params):
        metrics, preds = {}, []
        for k, trials in shots:
            accs = {m: [] for m in modes}
            for trial, (rows, cf_rows, gen_rows) in enumerate(trials):
                summed = row_logliks(trainer.model, params, rows, ev.batch_size).reshape(shape)
                cf = None
                if calibrate:
                    cf = row_logliks(trainer.model, params, cf_rows, ev.batch_size).reshape(shape)
                picked = {}
                for m in modes:
                    picked[m] = np.argmax(option_scores(m, summed, lengths, cf), axis=-1)
                    accs[m].append(float(np.mean(picked[m] == golds)))
                if trial:
                    continue
                gen = generate_labels(trainer, params, tok, gen_rows, ev)
                metrics[f"{k}shot/generation_exact_match"] = float(
                    np.mean([exact_match(g, [options[y]]) for g, y in zip(gen, golds, strict=True)])
                )
                for i, (it, g, t) in enumerate(zip(items, golds, gen, strict=True)):
                    p = {
                        "id": it[0],
                        "k": k,
                        "gold": options[g],
                        "pred": options[int(picked[modes[0]][i])],
                        "preds": {m: options[int(picked[m][i])] for m in modes},
                        "scores": summed[i].tolist(),
                        "generated": t,
                    }
                    if cf is not None:
                        p["content_free_scores"] = cf[i].tolist()
                    preds.append(p)
            for m in modes:
                metrics[f"{k}shot/{m}/accuracy_mean"] = float(np.mean(accs[m]))
                metrics[f"{k}shot/{m}/accuracy_std"] = float(np.std(accs[m]))
            metrics[f"{k}shot/accuracy_mean"] = metrics[f"{k}shot/{modes[0]}/accuracy_mean"]
            metrics[f"{k}shot/accuracy_std"] = metrics[f"{k}shot/{modes[0]}/accuracy_std"]
            metrics[f"{k}shot/trials"] = len(accs[modes[0]])
        metrics.update(scoring=list(modes), cue=cue, demo_labels=demo_labels)
        return metrics, preds

    return evaluate


def _image_prompt_ids(tok, text: str, layout, what: str) -> list[int]:
    """`text` (a literal </s> = the </s> id) as the VL encoder's prefix; a prompt longer than the
    prefix is an error, not a cut (a cut prompt is another prompt)."""
    from metalm_jax.data.tasks.task_rows import encode_prompt

    ids = encode_prompt(tok, text)
    if len(ids) > layout.prefix_len:
        raise ConfigError(
            f"evals: {what} {text!r} is {len(ids)} tokens; the vision encoder's text prefix holds "
            f"{layout.prefix_len} (model.vision.text_prefix): raise it, or shorten the prompt "
            '("" = none, for a vision-only encoder)'
        )
    return ids


def _caption_prompt_row(pixels, prompt, priming, layout, ids) -> dict:
    """One captioning prompt row: [Image(pixels, prompt), Text(priming)] (data/rows.py), i.e.

        <s> [S image slots][prompt slots] priming...      (the decoder continues after it)

    prompt, priming: token ids (either may be empty); ids: the tokenizer's special ids."""
    from metalm_jax.data.rows import Image, Text, build_row

    pieces = [Image(pixels, list(prompt))] + ([Text(list(priming))] if len(priming) else [])
    return build_row([pieces], layout.seq_len, layout.enc_length, layout=layout, ids=ids)


def captioning(ev, trainer, tok, cfg, derived):
    """Captions for the configured image set's validation split, COCO caption metrics.

    The encoder reads each image with `ev.prompt` as its text prefix; `ev.answer_prefix` (zero-shot
    priming) follows as decoder tokens; the caption is what the decoder generates after it (beam
    `ev.beam`, 1 = greedy). The paper's zero-shot protocol (PAPER.md §4.3): prompt "Summarize
    this image:", greedy; a run finetuned in the paper's captioning format: prompt "caption:";
    the old default: prompt "", beam 4, length_penalty 0.6. Built once: the images read and
    preprocessed, the prompt batches laid out (left-padded, as decode.generate takes them)."""
    import dataclasses

    from metalm_jax.data.corpora.image_text import as_text
    from metalm_jax.data.feed import vl_pipeline
    from metalm_jax.data.images import preprocess
    from metalm_jax.data.tasks.task_rows import encode_prompt
    from metalm_jax.eval import decode
    from metalm_jax.eval.metrics import caption_metrics

    layout = derived.layout
    if layout is None:
        raise ConfigError("evals: captioning needs a config with images.enabled")
    layout = dataclasses.replace(layout, images_per_row=1)
    prompt = _image_prompt_ids(tok, ev.prompt, layout, "captioning prompt")
    priming = encode_prompt(tok, ev.answer_prefix) if ev.answer_prefix else []
    src = vl_pipeline.image_split(cfg, "validation")
    n = min(ev.examples, len(src))
    sc = decode.SamplingConfig(beam=ev.beam, length_penalty=ev.length_penalty)
    batches = []  # ([(id, reference)], the left-padded prompt batch)
    for i in range(0, n, ev.batch_size):
        exs = [src[j] for j in range(i, min(n, i + ev.batch_size))]
        rows = []
        for ex in exs:
            pixels = preprocess(
                ex["image"],
                layout.image_size,
                record_id=as_text(ex["id"]),
            )
            rows.append(_caption_prompt_row(pixels, prompt, priming, layout, tok.ids))
        refs = [(as_text(ex["id"]), as_text(ex["caption"])) for ex in exs]
        batches.append((refs, decode.left_pad_rows(rows, tok.pad)))

    def evaluate(params):
        refs, hyps, preds = {}, {}, []
        for batch_refs, batch in batches:
            out = np.asarray(
                decode.generate(
                    trainer.model,
                    params,
                    batch,
                    _key(),
                    max_new=ev.max_tokens,
                    cfg=sc,
                    stop_ids=(tok.eos,),
                    pad_id=tok.pad,
                )
            )
            for (rid, ref), o in zip(batch_refs, out, strict=True):
                text = tok.decode([t for t in o if t != tok.eos])
                refs[rid] = [ref]
                hyps[rid] = text
                preds.append({"id": rid, "caption": text, "reference": ref})
        metrics = caption_metrics(hyps, refs, meteor=ev.meteor)
        metrics.update(examples=n, prompt=ev.prompt, beam=int(ev.beam))
        return metrics, preds

    return evaluate


_VQA_TASKS = ("emoji_vqa",)


def _vqa_file(path: str, layout) -> list[tuple]:
    """[(id "path:line", pixels uint8[H, W, 3], question, answers)] of a JSONL of
    {"image": path relative to the file, "question": str, "answers": [str, ...]}."""
    from metalm_jax.data.corpora.text import json_objects
    from metalm_jax.data.images import preprocess

    items = []
    for lineno, x in json_objects(path, "an object {image, question, answers}"):
        try:
            image = os.path.join(os.path.dirname(os.path.abspath(path)), x["image"])
            with open(image, "rb") as img:
                pixels = preprocess(img.read(), layout.image_size, record_id=image)
            items.append((f"{path}:{lineno}", pixels, str(x["question"]), list(x["answers"])))
        except (KeyError, OSError) as e:
            raise DataError(
                f"{path}:{lineno}: expected {{image, question, answers}} "
                f"with a readable image ({type(e).__name__}: {e})"
            ) from None
    return items


class _VqaTask:
    """The (id, pixels, question, answers) items of an offline VQA task's split, each read on
    first use (a training split is a pool of demonstrations, few of them drawn)."""

    def __init__(self, name: str, split: str, cfg, layout):
        from metalm_jax.data.tasks.emoji import emoji_vqa

        if name not in _VQA_TASKS:
            raise ConfigError(f"evals: vqa task={name!r}; expected one of {_VQA_TASKS}")
        # "{question}": the raw question as the prefix; the evaluator renders its own template.
        self.source = emoji_vqa(
            split,
            render_size=cfg.images.render_size,
            template="{question}",
            data_dir=cfg.data.tfds_data_dir or None,
        )
        self.layout = layout
        self._items: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple:
        from metalm_jax.data.images import preprocess

        if i not in self._items:
            ex, lay = self.source[i], self.layout
            (x,) = ex.inputs
            pixels = preprocess(x.image, lay.image_size, record_id=x.record_id or ex.id)
            self._items[i] = (ex.id, pixels, x.prefix, list(ex.references))
        return self._items[i]


def _vqa_sets(ev, cfg, layout):
    """(evaluated items, demonstration pool): the pool is a training split for demos="train"
    (the paper's), the evaluated items themselves for demos="eval" (the old behaviour; the
    query is left out of its own demonstrations)."""
    from metalm_jax.data.tasks.examples import shuffled_indices

    if bool(ev.file) == bool(ev.task):
        raise ConfigError("evals: vqa needs exactly one of `file` (a JSONL) and `task` (emoji_vqa)")
    if ev.demos not in ("train", "eval"):
        raise ConfigError(f"evals: vqa demos={ev.demos!r}; expected 'train' or 'eval'")
    needs_pool = ev.demos == "train" and any(k > 0 for k in ev.shots)
    if ev.task:
        src = _VqaTask(ev.task, ev.split, cfg, layout)
        items = [src[int(i)] for i in shuffled_indices(len(src), int(ev.seed))[: ev.examples]]
        if not needs_pool:
            return items, items
        if ev.split == "train":
            raise ConfigError(
                "evals: vqa split='train' with demos='train' would draw demonstrations from the "
                "evaluated split: evaluate another split, or set demos='eval'"
            )
        return items, _VqaTask(ev.task, "train", cfg, layout)
    items = _vqa_file(ev.file, layout)[: ev.examples]
    if not needs_pool:
        return items, items
    if not ev.train_file:
        raise ConfigError(
            f"evals: vqa shots={tuple(ev.shots)} with demos='train' needs `train_file` (a JSONL "
            "of the training split, demonstrations are drawn from it); or demos='eval' for "
            "demonstrations from the evaluated file"
        )
    if os.path.realpath(ev.train_file) == os.path.realpath(ev.file):
        raise ConfigError(
            f"evals: vqa train_file is the evaluated file ({ev.file}): demonstrations must come "
            "from a training split"
        )
    return items, _vqa_file(ev.train_file, layout)


def vqa(ev, trainer, tok, cfg, derived):
    """k-shot VQA by generation: each image encoded with its rendered question as the joint VL
    encoder's prefix, answers as decoder tokens (eval/prompts.build_vqa_row), then the query's
    image + question and `answer_prefix` (zero-shot priming, decoder tokens); VQA accuracy
    (metrics.vqa_score: official for 10-answer sets, else any answer matched) with
    the official normalization. Data: `file`, a JSONL of {"image": path relative to the file,
    "question": str, "answers": [...]}, or `task` (emoji_vqa) and its `split`.

    The paper's protocol (PAPER.md §4.3-4.4): template "Question: {question} Answer:",
    demonstrations from a training split (demos="train": the task's train split, or
    `train_file`), greedy. The old behaviour: template "{question}", demos="eval" (other items of
    the evaluated set). Predictions name the demonstrations each query got. Built once: the
    images read, every query's demonstrations drawn (seeded by `ev.seed` per k), the rows laid
    out."""
    import dataclasses

    from metalm_jax.data.tasks.examples import render
    from metalm_jax.data.tasks.task_rows import cut_middle, encode_prompt
    from metalm_jax.eval.metrics import vqa_score
    from metalm_jax.eval.prompts import build_vqa_row

    base_layout = derived.layout
    if base_layout is None or base_layout.prefix_len == 0:
        raise ConfigError("evals: vqa needs a joint vision-language encoder (images.enabled)")
    render(ev.template, {"question": ""}, where="evals: vqa template")  # fail early
    items, pool = _vqa_sets(ev, cfg, base_layout)
    eval_ids = {it[0] for it in items}

    def question(q: str) -> list[int]:  # the rendered template, its cue kept when cut
        text = render(ev.template, {"question": q}, where="evals: vqa template")
        return cut_middle(encode_prompt(tok, text), base_layout.prefix_len)

    priming = encode_prompt(tok, ev.answer_prefix) if ev.answer_prefix else []
    shots = []  # (k, rows, the demonstrations' ids per row)
    for k in ev.shots:
        layout = dataclasses.replace(base_layout, images_per_row=k + 1, seq_len=ev.seq_len)
        rng = np.random.default_rng(ev.seed)
        rows, demo_ids = [], []
        if k and k > len(pool) - (ev.demos == "eval"):
            raise ConfigError(f"evals: vqa {k}-shot: the demonstration pool holds {len(pool)}")
        for i, (_, img, q, _) in enumerate(items):
            if not k:
                picks = []
            elif ev.demos == "eval":  # never the query itself
                picks = rng.choice([j for j in range(len(items)) if j != i], k, replace=False)
            else:
                picks = rng.choice(len(pool), k, replace=False)
            demos = [pool[int(j)] for j in picks]
            leak = [d[0] for d in demos if ev.demos == "train" and d[0] in eval_ids]
            if leak:
                raise DataError(f"evals: vqa demonstrations {leak} are evaluated items too")
            d = [(dimg, question(dq), tok.encode(dans[0])) for _, dimg, dq, dans in demos]
            rows.append(build_vqa_row(d, (img, question(q)), priming, layout, tok.ids))
            demo_ids.append([x[0] for x in demos])
        shots.append((k, rows, demo_ids))
    references = [it[3] for it in items]

    def evaluate(params):
        metrics, preds = {}, []
        for k, rows, demo_ids in shots:
            answers = generate_labels(trainer, params, tok, rows, ev, max_new=ev.max_tokens)
            accs = [vqa_score(a, r) for a, r in zip(answers, references, strict=True)]
            metrics[f"{k}shot/vqa_accuracy"] = float(np.mean(accs))
            preds += [
                {"id": it[0], "k": k, "answer": a, "accuracy": acc, "demos": ids}
                for it, a, acc, ids in zip(items, answers, accs, demo_ids, strict=True)
            ]
        metrics.update(examples=len(items), template=ev.template, demos=ev.demos)
        return metrics, preds

    return evaluate


def completion(ev, trainer, tok, cfg, derived):
    """Verse completion on held-out KJV chapters: the first half of a verse as the prompt, the
    greedy continuation scored by token F1 and exact match against the second half. Built once:
    the verses drawn and cut in two."""
    from metalm_jax.eval.generation import generate_with
    from metalm_jax.eval.metrics import exact_match, token_f1

    _, items, _ = kjv_testament_task(ev.examples, ev.seed)
    prompts, refs = [], []
    for _, text, _ in items:
        words = text.split()
        half = max(1, len(words) // 2)
        prompts.append(" ".join(words[:half]))
        refs.append(" ".join(words[half:]))

    def evaluate(params):
        outs = []
        for i in range(0, len(prompts), ev.batch_size):
            outs += generate_with(
                cfg,
                tok,
                trainer.model,
                params,
                prompts[i : i + ev.batch_size],
                layout=derived.layout,
                max_tokens=ev.max_tokens,
            )
        f1 = [token_f1(o, [r]) for o, r in zip(outs, refs, strict=True)]
        em = [exact_match(o, [r]) for o, r in zip(outs, refs, strict=True)]
        preds = [
            {"id": it[0], "prompt": p, "completion": o, "reference": r}
            for it, p, o, r in zip(items, prompts, outs, refs, strict=True)
        ]
        return {
            "token_f1": float(np.mean(f1)),
            "exact_match": float(np.mean(em)),
            "examples": len(items),
        }, preds

    return evaluate


def perplexity(ev, trainer, tok, cfg, derived):
    """Held-out loss and perplexity; built once: the fixed validation batches (of
    `ev.batch_size` rows)."""
    from metalm_jax.data.feed import pipeline
    from metalm_jax.eval.scoring import heldout_loss

    sets = pipeline.eval_sets(cfg, tok, ev.batch_size, derived.rows, (0, 1))
    batches = [{"set": k, "batches": len(v)} for k, v in sets.items()]

    def evaluate(params):
        return heldout_loss(trainer, params, sets), batches

    return evaluate


def _key():
    import jax

    return jax.random.key(0)


def task(ev, trainer, tok, cfg, derived):
    from metalm_jax.eval.task_eval import task_evaluator

    return task_evaluator(ev, trainer, tok, cfg, derived)


def multitask(ev, trainer, tok, cfg, derived):
    from metalm_jax.eval.multitask_eval import multitask_evaluator

    return multitask_evaluator(ev, trainer, tok, cfg, derived)


EVALUATORS = {
    "task": task,
    "multitask": multitask,
    "perplexity": perplexity,
    "icl_classification": icl_classification,
    "captioning": captioning,
    "vqa": vqa,
    "completion": completion,
}


class Evals:
    """The run's evaluators, each built once; `run(params)` runs them all on the parameters and
    writes <workdir>/evals/<name>/{metrics.json, predictions.jsonl} (the newest eval's)."""

    def __init__(self, workdir: str, evaluators: dict):
        self.workdir = workdir
        self.evaluators = evaluators  # name -> evaluate(params) -> (metrics, predictions)

    @property
    def names(self) -> list[str]:
        return list(self.evaluators)

    def run(self, params) -> dict:
        """{name: metrics} of every evaluator on `params`, each also written to the workdir."""
        results = {}
        for name, evaluate in self.evaluators.items():
            metrics, preds = evaluate(params)
            _write(self.workdir, name, metrics, preds)
            results[name] = metrics
        return results


def build_evals(cfg, workdir: str, trainer, tok, names=None) -> Evals:
    """Builds the configured evaluators (all, or those in `names`: an empty list builds none)
    once, for `Evals.run` at every eval. Every name and type is checked before any evaluator
    opens its data, so a typo fails at once, before a run trains. Each evaluator gets the run's
    derived configs (model/build.derive): the trainer's, else derived here once."""
    from metalm_jax.model.build import derive

    if names is not None:
        unknown = [n for n in names if n not in cfg.evals]
        if unknown:
            raise ConfigError(
                f"evals: {unknown} not in the config's `evals` section {sorted(cfg.evals)} "
                "(check train.run_evals, or evaluate's --only)"
            )
    chosen = {n: ev for n, ev in cfg.evals.items() if names is None or n in names}
    for name, ev in chosen.items():
        if ev.type not in EVALUATORS:
            raise ConfigError(
                f"evals.{name}.type={ev.type!r}: expected one of {sorted(EVALUATORS)}"
            )
    derived = trainer.derived or derive(cfg, tok)
    return Evals(
        workdir,
        {name: EVALUATORS[ev.type](ev, trainer, tok, cfg, derived) for name, ev in chosen.items()},
    )


def run_evals(cfg, workdir: str, trainer, params, tok, names=None) -> dict:
    """Builds and runs the evaluators once (evaluate.py, tests); {name: metrics}."""
    return build_evals(cfg, workdir, trainer, tok, names).run(params)
