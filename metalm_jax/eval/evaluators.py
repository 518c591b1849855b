"""Evaluators chosen by name in the config's `evals` section (`evals.<name>.type`), each writing
`<workdir>/evals/<name>/metrics.json` and per-example `predictions.jsonl`.

  perplexity          held-out loss / perplexity on the fixed validation batches
  icl_classification  in-context classification by option scoring and by generation (exact
                      match of a greedy continuation), k-shot prompts with every demonstration
                      encoded separately (eval/prompts.py); tasks: kjv_testament (does a KJV
                      verse come from the Old or the New Testament?)
  captioning          captions for held-out images (KV-cache beam search), COCO metrics
  vqa                 k-shot VQA by generation, each image encoded with its question; VQA accuracy
  completion          held-out KJV verse completion by generation; token F1 and exact match
"""

from __future__ import annotations

import json
import os

import numpy as np

from metalm_jax.data.tokenizer import BOS_ID, EOS_ID
from metalm_jax.eval.metrics import exact_match
from metalm_jax.types import IMAGE_FIELDS, Batch


def _write(workdir, name, metrics, predictions):
    d = os.path.join(workdir, "evals", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    with open(os.path.join(d, "predictions.jsonl"), "w") as f:
        for p in predictions:
            f.write(json.dumps(p) + "\n")


def kjv_testament_task(n_items: int, seed: int):
    """(pool, items, options): verses labelled 0 = Old / 1 = New; items balanced, from the
    held-out chapters (the KjvBible validation rule), the pool from the training chapters."""
    from metalm_jax.data.corpora import kjv_chapters

    books_ot = 39
    order, pool, held = [], [], []
    for i, (name, verses) in enumerate(kjv_chapters()):
        book = name.rsplit(" ", 1)[0]
        if book not in order:
            order.append(book)
        label = 0 if order.index(book) < books_ot else 1
        target = held if i % 25 == 12 else pool
        target.extend((f"{name}:{v + 1}", text, label) for v, text in enumerate(verses))
    rng = np.random.default_rng(seed)
    items = []
    for label in (0, 1):
        cands = [x for x in held if x[2] == label]
        items += [cands[j] for j in rng.choice(len(cands), n_items // 2, replace=False)]
    return pool, items, ["Old", "New"]


def icl_classification(ev, trainer, params, tok, cfg):
    from metalm_jax.data.pipeline import span_encoding
    from metalm_jax.eval.prompts import build_icl_row
    from metalm_jax.eval.scoring import row_logliks

    if ev.task != "kjv_testament":
        raise ValueError(f"evals: unknown icl task {ev.task!r}; expected 'kjv_testament'")
    pool, items, options = kjv_testament_task(ev.examples, ev.seed)
    opt_ids = [tok.encode(o) for o in options]
    cut = lambda text: tok.encode(text)[: ev.max_input_tokens]
    encoding = span_encoding(cfg, tok)  # inputs are encoded as spans are in training
    metrics, preds = {}, []
    for k in ev.shots:
        accs = []
        for trial in range(ev.trials if k else 1):
            rng = np.random.default_rng(ev.seed * 1000 + trial)
            rows, golds, gen_rows = [], [], []
            for _rid, text, label in items:
                demos = [pool[j] for j in rng.choice(len(pool), k, replace=False)] if k else []
                d = [(cut(t), opt_ids[lab]) for _, t, lab in demos]
                for o in opt_ids:
                    rows.append(build_icl_row(d, cut(text), o, ev.seq_len, ev.enc_len, encoding))
                if trial == 0:
                    gen_rows.append(
                        build_icl_row(d, cut(text), [], ev.seq_len, ev.enc_len, encoding)
                    )
                golds.append(label)
            scores = row_logliks(trainer.model, params, rows, ev.batch_size)
            pred = np.argmax(scores.reshape(len(items), len(options)), axis=-1)
            accs.append(float(np.mean(pred == np.asarray(golds))))
            if trial == 0:
                gen = _generate_labels(trainer, params, tok, gen_rows, ev)
                metrics[f"{k}shot/generation_exact_match"] = float(
                    np.mean([exact_match(g, [options[y]]) for g, y in zip(gen, golds, strict=True)])
                )
                preds += [
                    {
                        "id": it[0],
                        "k": k,
                        "gold": options[g],
                        "pred": options[int(p)],
                        "scores": s.tolist(),
                        "generated": t,
                    }
                    for it, g, p, s, t in zip(
                        items, golds, pred, scores.reshape(len(items), -1), gen, strict=True
                    )
                ]
        metrics[f"{k}shot/accuracy_mean"] = float(np.mean(accs))
        metrics[f"{k}shot/accuracy_std"] = float(np.std(accs))
        metrics[f"{k}shot/trials"] = len(accs)
    return metrics, preds


def _generate_labels(trainer, params, tok, rows, ev, max_new: int = 3) -> list[str]:
    """Greedy continuations of prompt rows (built with an empty option), as text: the first
    line up to </s>. Rows are re-laid left-padded, as decode.generate needs."""
    from metalm_jax.eval import decode

    out = []
    for i in range(0, len(rows), ev.batch_size):
        chunk = rows[i : i + ev.batch_size]
        n = [int(r["segment_ids"].sum()) for r in chunk]
        P = max(n)
        grid = {}
        for key in ("tokens", "slot_index", "segment_ids", "positions", "targets"):
            fill = -1 if key == "slot_index" else 0
            grid[key] = np.full((len(chunk), P), fill, np.int32)
            for b, (r, m) in enumerate(zip(chunk, n, strict=True)):
                grid[key][b, P - m :] = r[key][:m]
        grid["loss_weights"] = np.zeros((len(chunk), P), np.float32)
        for key in ("enc_tokens", "enc_segment_ids", "enc_positions", *IMAGE_FIELDS):
            if key in chunk[0]:
                grid[key] = np.stack([r[key] for r in chunk])
        batch = Batch.from_dict(grid)
        gen = decode.generate(
            trainer.model,
            params,
            batch,
            _key(),
            max_new=max_new,
            cfg=decode.SamplingConfig(),
            stop_ids=(EOS_ID,),
        )
        out += [tok.decode([t for t in row if t != EOS_ID]).strip() for row in np.asarray(gen)]
    return out


def captioning(ev, trainer, params, tok, cfg):
    from metalm_jax.data import vl_pipeline
    from metalm_jax.data.images import preprocess
    from metalm_jax.eval import decode
    from metalm_jax.eval.metrics import caption_metrics
    from metalm_jax.model.build import dummy_batch, image_layout

    layout = image_layout(cfg)
    if layout is None:
        raise ValueError("evals: captioning needs a config with images.enabled")
    src = vl_pipeline.image_split(cfg, "validation")
    n = min(ev.examples, len(src))
    S = layout.image_slots
    sc = decode.SamplingConfig(beam=ev.beam, length_penalty=ev.length_penalty)
    refs, hyps, preds = {}, {}, []
    for i in range(0, n, ev.batch_size):
        exs = [src[j] for j in range(i, min(n, i + ev.batch_size))]
        B = len(exs)
        batch = dummy_batch(B, 1 + S, layout.enc_length, layout)  # image slots follow Le
        images = np.zeros_like(batch.images)
        valid = np.zeros_like(batch.image_valid)
        for b, ex in enumerate(exs):
            images[b, 0] = preprocess(
                ex["image"],
                layout.image_size,
                record_id=vl_pipeline._text(ex["id"]),
                mean=layout.mean,
                std=layout.std,
            )
            valid[b, 0] = 1
        slots = np.full((B, 1 + S), -1, np.int32)
        slots[:, 1:] = layout.text_bank + np.arange(S)
        tokens = np.zeros((B, 1 + S), np.int32)
        tokens[:, 0] = BOS_ID
        batch = batch.replace(
            tokens=tokens,
            slot_index=slots,
            segment_ids=np.ones((B, 1 + S), np.int32),
            positions=np.tile(np.arange(1 + S, dtype=np.int32), (B, 1)),
            images=images,
            image_valid=valid,
        )
        out = np.asarray(
            decode.generate(
                trainer.model,
                params,
                batch,
                _key(),
                max_new=ev.max_tokens,
                cfg=sc,
                stop_ids=(EOS_ID,),
            )
        )
        for ex, o in zip(exs, out, strict=True):
            rid = vl_pipeline._text(ex["id"])
            text = tok.decode([t for t in o if t != EOS_ID])
            refs[rid] = [vl_pipeline._text(ex["caption"])]
            hyps[rid] = text
            preds.append({"id": rid, "caption": text, "reference": refs[rid][0]})
    metrics = caption_metrics(hyps, refs, meteor=ev.meteor)
    metrics["examples"] = n
    return metrics, preds


def vqa(ev, trainer, params, tok, cfg):
    """k-shot VQA by generation: each image encoded with its question (joint VL encoder prefix),
    answers as decoder tokens (eval/prompts.build_vqa_row); VQA accuracy with the official
    normalization. Data: `ev.file`, a JSONL of {"image": path, "question": str, "answers": [...]}
    (paths relative to the file)."""
    import dataclasses

    from metalm_jax.data.images import preprocess
    from metalm_jax.eval.metrics import vqa_accuracy
    from metalm_jax.eval.prompts import build_vqa_row
    from metalm_jax.model.build import image_layout

    base_layout = image_layout(cfg)
    if base_layout is None or base_layout.prefix_len == 0:
        raise ValueError("evals: vqa needs a joint vision-language encoder (images.enabled)")
    items = []
    with open(ev.file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                x = json.loads(line)
                path = os.path.join(os.path.dirname(os.path.abspath(ev.file)), x["image"])
                with open(path, "rb") as img:
                    pixels = preprocess(
                        img.read(),
                        base_layout.image_size,
                        record_id=path,
                        mean=base_layout.mean,
                        std=base_layout.std,
                    )
                q = tok.encode(x["question"])[: base_layout.prefix_len]
                items.append((f"{ev.file}:{lineno}", pixels, q, list(x["answers"])))
            except (KeyError, json.JSONDecodeError, OSError) as e:
                raise ValueError(
                    f"{ev.file}:{lineno}: expected {{image, question, answers}} "
                    f"with a readable image ({type(e).__name__}: {e})"
                ) from None
    items = items[: ev.examples]
    metrics, preds = {}, []
    for k in ev.shots:
        layout = dataclasses.replace(base_layout, images_per_row=k + 1, seq_len=ev.seq_len)
        rng = np.random.default_rng(ev.seed)
        rows = []
        for i, (_, img, q, _) in enumerate(items):
            others = [j for j in range(len(items)) if j != i]
            demos = [items[j] for j in rng.choice(others, k, replace=False)] if k else []
            d = [(dimg, dq, tok.encode(dans[0])) for _, dimg, dq, dans in demos]
            rows.append(build_vqa_row(d, (img, q), [], layout))
        answers = _generate_labels(trainer, params, tok, rows, ev, max_new=ev.max_tokens)
        accs = [vqa_accuracy(a, it[3]) for a, it in zip(answers, items, strict=True)]
        metrics[f"{k}shot/vqa_accuracy"] = float(np.mean(accs))
        preds += [
            {"id": it[0], "k": k, "answer": a, "accuracy": acc}
            for it, a, acc in zip(items, answers, accs, strict=True)
        ]
    metrics["examples"] = len(items)
    return metrics, preds


def completion(ev, trainer, params, tok, cfg):
    """Verse completion on held-out KJV chapters: the first half of a verse as the prompt, the
    greedy continuation scored by token F1 and exact match against the second half."""
    from metalm_jax.eval.metrics import exact_match, token_f1
    from metalm_jax.generate import generate_with

    _, items, _ = kjv_testament_task(ev.examples, ev.seed)
    prompts, refs = [], []
    for _, text, _ in items:
        words = text.split()
        half = max(1, len(words) // 2)
        prompts.append(" ".join(words[:half]))
        refs.append(" ".join(words[half:]))
    outs = []
    for i in range(0, len(prompts), ev.batch_size):
        outs += generate_with(
            cfg,
            tok,
            trainer.model,
            params,
            prompts[i : i + ev.batch_size],
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


def perplexity(ev, trainer, params, tok, cfg):
    from metalm_jax.data import pipeline
    from metalm_jax.model.build import image_layout
    from metalm_jax.train.loop import evaluate

    sets = pipeline.eval_sets(cfg, tok, ev.batch_size, (0, 1), image_layout(cfg))
    m = evaluate(trainer, params, sets)
    return m, [{"set": k, "batches": len(v)} for k, v in sets.items()]


def _key():
    import jax

    return jax.random.key(0)


def task(ev, trainer, params, tok, cfg):
    from metalm_jax.eval.task_eval import evaluate_task

    return evaluate_task(ev, trainer, params, tok, cfg)


EVALUATORS = {
    "task": task,
    "perplexity": perplexity,
    "icl_classification": icl_classification,
    "captioning": captioning,
    "vqa": vqa,
    "completion": completion,
}


def run_evals(cfg, workdir: str, trainer, params, tok, names=None) -> dict:
    """Runs the configured evaluators (all, or `names`); returns {name: metrics}."""
    results = {}
    for name, ev in cfg.evals.items():
        if names and name not in names:
            continue
        if ev.type not in EVALUATORS:
            raise ValueError(f"evals.{name}.type={ev.type!r}: expected one of {sorted(EVALUATORS)}")
        metrics, preds = EVALUATORS[ev.type](ev, trainer, params, tok, cfg)
        _write(workdir, name, metrics, preds)
        results[name] = metrics
    return results
