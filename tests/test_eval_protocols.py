"""The paper's zero-shot captioning and k-shot VQA protocols in the evaluators (PAPER.md §4.3-4.4):
prompt rows by hand, template rendering, demonstrations only from a training split."""

import json

import numpy as np
import pytest

from metalm_jax import testing
from metalm_jax.config import captioning_eval, vqa_eval
from metalm_jax.data.rows import ImageLayout
from metalm_jax.data.tokenizer import BOS_ID, PAD_ID, SENTENCEPIECE_IDS
from metalm_jax.eval import decode, evaluators
from metalm_jax.model.build import derive
from metalm_jax.types import ConfigError


class WordTok:
    """One id per distinct whitespace-separated word (ids 5.., in order of first use); the
    special ids are SentencePiece's."""

    ids = SENTENCEPIECE_IDS
    pad, bos, eos, unk, doc_end = 0, 1, 2, 3, 4

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, 5 + len(self.vocab)) for w in text.split()]

    def decode(self, ids) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words.get(int(i), f"t{int(i)}") for i in ids)


def test_caption_prompt_row_puts_the_prompt_under_the_prefix_slots_by_hand():
    layout = ImageLayout(
        seq_len=16, images_per_row=1, image_slots=2, prefix_len=3, text_bank=5, image_size=4,
        enc_length=5,
    )  # fmt: skip
    img = np.full((4, 4, 3), 1, np.uint8)
    row = evaluators._caption_prompt_row(img, [11, 12], [21], layout, SENTENCEPIECE_IDS)
    #   <s> [img img][p11 p12] 21        bank: text 0..4, the image's 2 + 3 slots at 5..9
    np.testing.assert_array_equal(row["tokens"][:6], [BOS_ID, PAD_ID, PAD_ID, 11, 12, 21])
    np.testing.assert_array_equal(row["slot_index"][:6], [-1, 5, 6, 7, 8, -1])
    np.testing.assert_array_equal(row["vl_prefix"], [[11, 12, 0]])
    np.testing.assert_array_equal(row["vl_prefix_mask"], [[1, 1, 0]])
    assert row["segment_ids"].sum() == 6 and row["image_valid"].tolist() == [1]
    # no prompt, no priming (the old rows): <s> and the image's slots only
    bare = evaluators._caption_prompt_row(img, [], [], layout, SENTENCEPIECE_IDS)
    np.testing.assert_array_equal(bare["slot_index"][:4], [-1, 5, 6, -1])
    assert bare["segment_ids"].sum() == 3 and bare["vl_prefix_mask"].sum() == 0
    # left-padded for decode.generate: the shorter row gets padding (segment 0) on the left
    batch = decode.left_pad_rows([row, bare])
    assert batch.tokens.shape == (2, 6)
    np.testing.assert_array_equal(batch.tokens[0], row["tokens"][:6])
    np.testing.assert_array_equal(batch.slot_index[1], [-1, -1, -1, -1, 5, 6])
    np.testing.assert_array_equal(batch.segment_ids[1], [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(batch.positions[1], [0, 0, 0, 0, 1, 2])
    np.testing.assert_array_equal(batch.vl_prefix[:, 0], [[11, 12, 0], [0, 0, 0]])


class _Trainer:
    model = None


def _run_captioning(monkeypatch, ev, cfg=None):
    """captioning(...)({}) on 3 fake records with decode.generate and the metrics faked; returns the
    prompt batches and sampling configs generate got."""
    from metalm_jax.data.feed import vl_pipeline
    from metalm_jax.eval import decode, metrics

    records = [
        {"id": f"e{i}".encode(), "image": np.full((8, 8, 3), 40 * i, np.uint8), "caption": b"a b"}
        for i in range(3)
    ]
    calls = []

    def generate(model, params, batch, key, *, max_new, cfg, stop_ids, pad_id):
        assert stop_ids == (tok.eos,) and pad_id == tok.pad
        calls.append((batch, cfg))
        return np.full((batch.tokens.shape[0], max_new), 5, np.int32)

    monkeypatch.setattr(vl_pipeline, "image_split", lambda cfg, split: records)
    monkeypatch.setattr(decode, "generate", generate)
    monkeypatch.setattr(metrics, "caption_metrics", lambda h, r, meteor: {"CIDEr": 0.0})
    tok, cfg = WordTok(), cfg or testing.micro_vl_config()
    m, preds = evaluators.captioning(ev, _Trainer(), tok, cfg, derive(cfg, tok))({})
    assert m["examples"] == 3 and len(preds) == 3
    return calls, tok


def test_captioning_defaults_to_the_papers_zero_shot_prompt_greedy(monkeypatch):
    ev = captioning_eval(examples=3, batch_size=2, max_tokens=2)
    calls, tok = _run_captioning(monkeypatch, ev)
    assert [c[1].beam for c in calls] == [1, 1]  # greedy
    batch = calls[0][0]
    prompt = tok.encode("Summarize this image:")
    S = 4  # micro_vl: 16 px images in 8 px patches; text_prefix 4, text_bank = enc_length 24
    assert batch.tokens.shape == (2, 1 + S + len(prompt))
    np.testing.assert_array_equal(batch.tokens[:, 1 + S :], [prompt, prompt])
    np.testing.assert_array_equal(batch.slot_index[0, 1:], 24 + np.arange(S + len(prompt)))
    np.testing.assert_array_equal(batch.vl_prefix[:, 0, : len(prompt)], [prompt, prompt])
    assert batch.images.shape[1] == 1 and batch.image_valid.tolist() == [[1], [1]]


def test_captioning_keeps_the_old_behaviour_and_the_finetune_format_selectable(monkeypatch):
    old = captioning_eval(examples=3, batch_size=4, max_tokens=2, prompt="", beam=4)
    calls, _ = _run_captioning(monkeypatch, old)
    ((batch, sc),) = calls
    assert sc.beam == 4 and sc.length_penalty == 0.6
    assert batch.tokens.shape == (3, 5) and batch.vl_prefix_mask.sum() == 0
    primed = captioning_eval(examples=3, batch_size=4, prompt="caption:", answer_prefix="an")
    calls, tok = _run_captioning(monkeypatch, primed)
    batch = calls[0][0]
    (cue,), (an,) = tok.encode("caption:"), tok.encode("an")
    np.testing.assert_array_equal(batch.tokens[0, -2:], [cue, an])  # slot, then decoder text
    np.testing.assert_array_equal(batch.slot_index[0, -2:], [24 + 4, -1])


def test_a_captioning_prompt_longer_than_the_vl_prefix_is_an_error(monkeypatch):
    ev = captioning_eval(examples=3, prompt="one two three four five")
    with pytest.raises(ValueError, match=r"'one two three four five' is 5 tokens.*holds 4 "
                       r"\(model\.vision\.text_prefix\)"):  # fmt: skip
        _run_captioning(monkeypatch, ev)


def _png(path, color):
    import PIL.Image

    PIL.Image.new("RGB", (12, 12), color).save(path)


def _vqa_files(tmp_path):
    """An evaluated JSONL of 4 items and a training JSONL of 5 (different images)."""
    for name, n in (("val", 4), ("train", 5)):
        rows = []
        for i in range(n):
            _png(tmp_path / f"{name}{i}.png", (50 * i, 255 - 40 * i, 7))
            rows.append(
                {"image": f"{name}{i}.png", "question": "what color?", "answers": ["red"] * 10}
            )
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(tmp_path / "val.jsonl"), str(tmp_path / "train.jsonl")


def _run_vqa(monkeypatch, ev, tok=None):
    """vqa(...)({}) with generation faked ("red" for every row): (metrics, predictions, rows)."""
    seen = []

    def generate_labels(trainer, params, tok, rows, ev, max_new=3):
        seen.extend(rows)
        return ["red"] * len(rows)

    monkeypatch.setattr(evaluators, "generate_labels", generate_labels)
    tok, cfg = tok or WordTok(), testing.micro_vl_config()
    m, preds = evaluators.vqa(ev, _Trainer(), tok, cfg, derive(cfg, tok))({})
    return m, preds, seen


def test_vqa_demonstrations_come_from_the_training_file_never_the_evaluated_one(
    monkeypatch, tmp_path
):
    val, train = _vqa_files(tmp_path)
    ev = vqa_eval(val, train_file=train, shots=(0, 2), seq_len=64, batch_size=4)
    m, preds, _ = _run_vqa(monkeypatch, ev)
    eval_ids = {f"{val}:{i}" for i in range(1, 5)}
    train_ids = {f"{train}:{i}" for i in range(1, 6)}
    assert {p["id"] for p in preds} == eval_ids and m["examples"] == 4
    assert m["0shot/vqa_accuracy"] == 1.0 and m["demos"] == "train"
    used = [d for p in preds for d in p["demos"]]
    assert [len(p["demos"]) for p in preds] == [0] * 4 + [2] * 4
    assert set(used) <= train_ids and not set(used) & eval_ids
    assert len(set(used)) > 2  # drawn per query, not one fixed pair
    # the old behaviour: other items of the evaluated file, never the query itself
    old = vqa_eval(val, shots=(2,), demos="eval", seq_len=64)
    _, preds, _ = _run_vqa(monkeypatch, old)
    for p in preds:
        assert set(p["demos"]) <= eval_ids and p["id"] not in p["demos"]


def test_vqa_without_a_training_split_is_a_clear_error(monkeypatch, tmp_path):
    val, _ = _vqa_files(tmp_path)
    with pytest.raises(ConfigError, match="demos='train' needs `train_file`"):
        _run_vqa(monkeypatch, vqa_eval(val, shots=(0, 1), seq_len=64))
    with pytest.raises(ConfigError, match="train_file is the evaluated file"):
        _run_vqa(monkeypatch, vqa_eval(val, train_file=val, shots=(1,), seq_len=64))
    with pytest.raises(ConfigError, match="exactly one of `file`"):
        _run_vqa(monkeypatch, vqa_eval(shots=(0,)))
    m, _, _ = _run_vqa(monkeypatch, vqa_eval(val, shots=(0,), seq_len=64))  # zero-shot: none
    assert m["examples"] == 4


def test_vqa_template_renders_into_the_vl_prefix_and_priming_follows(monkeypatch, tmp_path):
    val, train = _vqa_files(tmp_path)
    tok = WordTok()
    ev = vqa_eval(val, train_file=train, shots=(1,), seq_len=64, answer_prefix="it is")
    _, _, rows = _run_vqa(monkeypatch, ev, tok)
    paper = tok.encode("Question: what color? Answer:")  # 4 words = the micro prefix of 4
    for row in rows:  # the demonstration's image and the query's, each with its question
        np.testing.assert_array_equal(row["vl_prefix"], [paper, paper])
        n = int(row["segment_ids"].sum())
        np.testing.assert_array_equal(row["tokens"][n - 2 : n], tok.encode("it is"))
        assert (row["slot_index"][n - 2 : n] == -1).all()  # priming is decoder text
    # the old raw question (padded to the prefix); a bad template fails before any item
    _, _, rows = _run_vqa(monkeypatch, vqa_eval(val, shots=(0,), template="{question}"), tok)
    np.testing.assert_array_equal(rows[0]["vl_prefix"][0], tok.encode("what color?") + [0, 0])
    with pytest.raises(ValueError, match=r"evals: vqa template.*needs field\(s\) \['questoin'\]"):
        _run_vqa(monkeypatch, vqa_eval(val, shots=(0,), template="Q: {questoin}"), tok)


def test_vqa_on_an_offline_task_draws_demonstrations_from_its_train_split(monkeypatch):
    from metalm_jax.data.tasks import emoji
    from metalm_jax.data.tasks.examples import ImageInput, TaskExample, render

    templates = []

    def emoji_vqa(split, render_size=64, template="", data_dir=None):
        templates.append(template)
        return [
            TaskExample(
                id=f"{split}/{i}",
                inputs=(
                    ImageInput(
                        np.full((8, 8, 3), i, np.uint8),
                        prefix=render(template, {"question": f"what is {split} {i}?"}),
                        record_id=f"{split}{i}",
                    ),
                ),
                target="thing",
                answers=("thing",),
            )
            for i in range(6 if split == "train" else 3)
        ]

    monkeypatch.setattr(emoji, "emoji_vqa", emoji_vqa)
    tok = WordTok()
    ev = vqa_eval(task="emoji_vqa", shots=(0, 3), seq_len=64, examples=3)
    m, preds, rows = _run_vqa(monkeypatch, ev, tok)
    assert set(templates) == {"{question}"}  # the raw question; the evaluator renders its own
    assert {p["id"] for p in preds} == {"validation/0", "validation/1", "validation/2"}
    assert all(d.startswith("train/") for p in preds for d in p["demos"])
    q = preds[-1]["id"].replace("/", " ")
    query_prefix = rows[-1]["vl_prefix"][3]  # the query is the 4th image of a 3-shot row
    rendered = tok.encode(f"Question: what is {q}? Answer:")  # 6 words, cut to 4: cue kept
    np.testing.assert_array_equal(query_prefix, rendered[:3] + rendered[-1:])
    with pytest.raises(ValueError, match="split='train' with demos='train'"):
        _run_vqa(monkeypatch, vqa_eval(task="emoji_vqa", split="train", shots=(1,)), tok)


@pytest.mark.slow
def test_captioning_prompt_rows_run_through_the_micro_model(monkeypatch):
    import jax

    from metalm_jax.data.feed import vl_pipeline
    from metalm_jax.eval import metrics
    from metalm_jax.parallel.mesh import make_mesh
    from metalm_jax.training.trainer import build_trainer

    records = [
        {"id": f"e{i}".encode(), "image": np.full((8, 8, 3), 90 * i, np.uint8), "caption": b"a b"}
        for i in range(3)
    ]
    monkeypatch.setattr(vl_pipeline, "image_split", lambda cfg, split: records)
    monkeypatch.setattr(metrics, "caption_metrics", lambda h, r, meteor: {"CIDEr": 0.0})
    cfg = testing.micro_vl_config()
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    trainer = build_trainer(cfg, mesh)
    with jax.set_mesh(mesh):
        params = trainer.init(jax.random.key(0)).params
    ev = captioning_eval(examples=3, batch_size=2, max_tokens=3, answer_prefix="a")
    m, preds = evaluators.captioning(ev, trainer, WordTok(), cfg, derive(cfg, WordTok()))(params)
    assert m["examples"] == 3 and m["prompt"] == "Summarize this image:" and m["beam"] == 1
    assert [p["id"] for p in preds] == ["e0", "e1", "e2"]
    assert all(isinstance(p["caption"], str) for p in preds)
