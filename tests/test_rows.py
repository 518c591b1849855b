"""The one row builder (data/rows.py), task examples and templates (data/tasks/examples.py, the
JSONL task), and task rows (data/tasks/task_rows.py): layouts written out by hand, pure numpy."""

import dataclasses
import json

import numpy as np
import pytest

from metalm_jax.data.rows import (
    DoesNotFit,
    Enc,
    Image,
    ImageLayout,
    RowBuilder,
    Target,
    Text,
    build_row,
)
from metalm_jax.data.tasks.examples import render, verbalize
from metalm_jax.data.tasks.jsonl import JsonlTask
from metalm_jax.data.tasks.task_rows import cut_middle
from metalm_jax.model.build import derive
from metalm_jax.types import Batch, SlotBank
from tests import _needs

A, B, C, X, P, Q = 11, 12, 13, 14, 21, 22  # token ids
S, E = 1, 2  # <s>, </s>


def test_packed_two_text_examples_by_hand():
    """The worked example of data/rows.py's docstring."""
    row = build_row([[Enc([A, B]), Target([P, E])], [Enc([C]), Text([X]), Target([Q, E])]], 16, 8)
    n = 10
    np.testing.assert_array_equal(row["tokens"][:n], [S, A, B, P, E, S, C, X, Q, E])
    np.testing.assert_array_equal(row["slot_index"][:n], [-1, 1, 2, -1, -1, -1, 4, -1, -1, -1])
    np.testing.assert_array_equal(row["segment_ids"], [1] * 5 + [2] * 5 + [0] * 6)
    np.testing.assert_array_equal(row["positions"][:n], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    # the loss covers exactly the targets: P from b's slot, </s> from P; Q from x, </s> from Q
    np.testing.assert_array_equal(np.nonzero(row["loss_weights"])[0], [2, 3, 7, 8])
    np.testing.assert_array_equal(row["targets"][[2, 3, 7, 8]], [P, E, Q, E])
    np.testing.assert_array_equal(row["enc_tokens"], [S, A, B, S, C, 0, 0, 0])
    np.testing.assert_array_equal(row["enc_segment_ids"], [1, 1, 1, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(row["enc_positions"], [0, 1, 2, 0, 1, 0, 0, 0])


def test_packed_two_image_examples_by_hand():
    """Two VQA-style examples: image + question prefix in the VL encoder, answer as target.
    Slot bank: text grid (Le = 4) first, then S' = S + Lp = 2 + 3 entries per image."""
    lay = ImageLayout(
        seq_len=16, images_per_row=2, image_slots=2, prefix_len=3, text_bank=4, image_size=2,
        enc_length=4,
    )  # fmt: skip
    img1, img2 = np.full((2, 2, 3), 1, np.uint8), np.full((2, 2, 3), 2, np.uint8)
    row = build_row(
        [[Image(img1, [A, B]), Target([P, E])], [Image(img2, [C]), Target([Q, E])]],
        16, 4, layout=lay,
    )  # fmt: skip
    # <s> [i1 i1] a b P </s> | <s> [i2 i2] c Q </s>
    np.testing.assert_array_equal(row["tokens"][:12], [S, 0, 0, A, B, P, E, S, 0, 0, C, Q][:12])
    np.testing.assert_array_equal(
        row["slot_index"][:13], [-1, 4, 5, 6, 7, -1, -1, -1, 9, 10, 11, -1, -1]
    )
    np.testing.assert_array_equal(row["segment_ids"][:14], [1] * 7 + [2] * 6 + [0])
    np.testing.assert_array_equal(np.nonzero(row["loss_weights"])[0], [4, 5, 10, 11])
    np.testing.assert_array_equal(row["targets"][[4, 5, 10, 11]], [P, E, Q, E])
    np.testing.assert_array_equal(row["vl_prefix"], [[A, B, 0], [C, 0, 0]])
    np.testing.assert_array_equal(row["vl_prefix_mask"], [[1, 1, 0], [1, 0, 0]])
    assert row["image_valid"].tolist() == [1, 1] and row["images"][1, 0, 0, 0] == 2
    assert not row["enc_segment_ids"].any()  # no text-encoder input


def test_row_builder_stops_at_what_does_not_fit():
    b = RowBuilder(12, 6)
    assert b.add([Enc([A, B]), Target([P, E])])  # 5 positions, 3 encoder positions
    assert not b.add([Enc([A, B, C]), Target([P, E])])  # the encoder grid would need 7
    assert b.add([Text([X]), Target([Q, E])])  # no encoder input: fits
    assert b.row()["segment_ids"].max() == 2
    with pytest.raises(DoesNotFit, match="decoder positions"):
        RowBuilder(4, 6).add([Text([X, X]), Target([P, E])])
    with pytest.raises(DoesNotFit, match="encoder positions"):
        RowBuilder(16, 2).add([Enc([A, B]), Target([P, E])])
    lay = ImageLayout(16, 1, 2, 1, 0, 2, 4)
    with pytest.raises(DoesNotFit, match="text_prefix=1"):
        RowBuilder(16, 4, layout=lay).add([Image(np.zeros((2, 2, 3), np.uint8), [A, B])])
    with pytest.raises(ValueError, match="vision encoder"):
        RowBuilder(16, 4).add([Image(np.zeros((2, 2, 3), np.uint8), [A])])


def test_the_slot_bank_has_one_layout_and_a_slot_past_it_is_an_error():
    """types.SlotBank: the text grid, then S' entries per image. An index past the bank (the
    model's gather would clip it silently) fails Batch.validate naming the row and position,
    and the row builder refuses to make one."""
    lay = ImageLayout(
        seq_len=16, images_per_row=2, image_slots=2, prefix_len=3, text_bank=4, image_size=2,
        enc_length=4,
    )  # fmt: skip
    bank = lay.bank
    assert bank == SlotBank(4, 5, 2) and bank.size == 14
    np.testing.assert_array_equal(bank.image_slots(1, 3), [9, 10, 11])
    np.testing.assert_array_equal(bank.text_slots(1, 2), [1, 2])
    with pytest.raises(ValueError, match="2 images of 5 slots"):
        bank.image_slots(2, 1)
    # a vision-only model's bank holds no text grid: an encoder input is an error, not a slot
    # that points into the first image
    vision_only = dataclasses.replace(lay, text_bank=0)
    with pytest.raises(ValueError, match="none without a text encoder"):
        RowBuilder(16, 4, layout=vision_only).add([Enc([A]), Target([P, E])])

    rows = [build_row([[Enc([A, B]), Target([P, E])]], 16, 8) for _ in range(2)]
    batch = Batch.from_dict({k: np.stack([r[k] for r in rows]) for k in rows[0]})
    batch.validate()  # without images the default bank is the text grid (8)
    batch.slot_index[1, 2] = 8
    with pytest.raises(
        ValueError, match=r"Batch.slot_index: slot_index 8 at row 1, position 2 is past the slot"
    ):
        batch.validate()
    batch.validate(SlotBank(8, 1, 1))  # a bank with one image slot after the grid holds 8
    batch.slot_index[0, 5] = -2
    with pytest.raises(ValueError, match="slot_index -2 at row 0, position 5"):
        batch.validate(SlotBank(8, 1, 1))

    img = np.zeros((2, 2, 3), np.uint8)
    row = build_row([[Image(img, [A]), Target([P, E])]], 16, 4, layout=lay)
    batch = Batch.from_dict({k: v[None] for k, v in row.items()})
    batch.validate(lay.bank)
    batch.slot_index[0, 3] = 14
    with pytest.raises(
        ValueError,
        match=r"row 0, position 3 .*\(4 text-encoder positions \+ 2 images x 5 slots = 14",
    ):
        batch.validate(lay.bank)

    b = RowBuilder(16, 4, layout=lay)  # the builder checks every row it makes
    b.add([Image(img, [A]), Target([P, E])])
    b.examples[0][0].slots[-1] = 14
    with pytest.raises(ValueError, match="slot_index 14 at row 0, position 3"):
        b.row()


def test_templates_verbalizers_and_cuts():
    t = "Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:"
    assert render(t, {"premise": "a", "hypothesis": "b", "x": 1}) == (
        "Premise: a </s> Hypothesis: b </s> Label:"
    )
    with pytest.raises(ValueError, match=r"needs field\(s\) \['hypothesis'\]"):
        render(t, {"premise": "a"}, "f.jsonl:3")
    assert verbalize(1, ["no", "yes"], "w") == "yes"
    assert verbalize("pos", {"pos": "positive"}, "w") == "positive"
    with pytest.raises(ValueError, match="label 5"):
        verbalize(5, ["no", "yes"], "f.jsonl:2")
    assert cut_middle(list(range(10)), 10) == list(range(10))
    assert cut_middle(list(range(100)), 20) == list(range(15)) + list(range(95, 100))


def test_jsonl_task_plain_and_templated(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        json.dumps({"input": "2 + 2 =", "target": "4"}) + "\n\n"
        + json.dumps({"input": ["first", "second"], "target": "x", "answers": ["x", "y"]}) + "\n"
    )  # fmt: skip
    task = JsonlTask(str(plain))
    assert len(task) == 2 and task[0].inputs == ("2 + 2 =",) and task[0].target == "4"
    assert task[1].inputs == ("first", "second") and task[1].references == ("x", "y")
    nli = tmp_path / "nli.jsonl"
    nli.write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": 2}) + "\n")
    task = JsonlTask(
        str(nli),
        input_template="Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:",
        label_field="label",
        verbalizer=("entailment", "neutral", "contradiction"),
    )
    ex = task[0]
    assert ex.target == "contradiction" and ex.options == ("entailment", "neutral", "contradiction")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "target": "b"}\n{"inpt": "a", "target": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected key 'input'"):
        JsonlTask(str(bad))
    bad.write_text('{"input": "a", "target": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        JsonlTask(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        JsonlTask(str(tmp_path / "missing.jsonl"))


def test_example_encoder_separators_targets_and_decoder_only(corpus):
    """`</s>` in a prompt is the </s> id; targets end in </s>; without a text encoder the
    inputs are decoder text (the GPT baseline)."""
    from metalm_jax.data.tasks.examples import TaskExample
    from metalm_jax.data.tasks.task_rows import ExampleEncoder, encode_prompt

    cfg, tok = corpus
    ids = encode_prompt(tok, "In the beginning </s> Answer:")
    assert ids == tok.encode("In the beginning") + [E] + tok.encode("Answer:")
    ex = TaskExample("x", ("In the beginning </s> Answer:",), "God", options=("God", "man"))
    enc = ExampleEncoder(tok, cfg.task, text_encoder=True)
    pieces = enc.pieces(ex)
    assert isinstance(pieces[0], Enc) and list(pieces[0].ids) == ids
    assert isinstance(pieces[-1], Target) and list(pieces[-1].ids) == tok.encode("God") + [E]
    gpt = ExampleEncoder(tok, cfg.task, text_encoder=False).pieces(ex)
    assert isinstance(gpt[0], Text) and list(gpt[0].ids) == ids


def test_task_iterator_resumes_exactly(corpus):
    """The finetuning data iterator's state (saved in checkpoints) resumes on the same rows."""
    from metalm_jax.data.feed import pipeline
    from metalm_jax.testing import micro_finetune_config

    cfg, tok = corpus
    cfg = micro_finetune_config("unused", cfg.data.tfds_data_dir)
    it = pipeline.train_iterator(cfg, tok, 2, derive(cfg, tok).rows)
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(2)]
    again = pipeline.train_iterator(cfg, tok, 2, derive(cfg, tok).rows)
    again.set_state(state)
    for w in want:
        g = next(again)
        for k in w:
            np.testing.assert_array_equal(w[k], g[k], err_msg=k)
    rows = want[0]
    assert (rows["segment_ids"].max(axis=1) >= 2).all()  # several examples packed per row
    # targets only: every weighted position predicts a target token or the </s> after it
    w = rows["loss_weights"] > 0
    assert w.sum() > 0 and (rows["targets"][w] > 0).all()


def test_task_rows_with_a_retokenizing_encoder(corpus):
    """With MiniLM's WordPiece the inputs are re-tokenized ([CLS] ... [SEP]) and take one slot
    per vector it returns; the targets stay SentencePiece decoder tokens."""
    import os

    _needs.minilm()
    from metalm_jax.data.spans import RetokenizedEncoding
    from metalm_jax.data.tasks.examples import TaskExample
    from metalm_jax.data.tasks.task_rows import ExampleEncoder
    from metalm_jax.resources import resolve_path

    cfg, tok = corpus
    enc = RetokenizedEncoding(os.path.join(resolve_path("minilm"), "tokenizer.json"), tok, 64)
    exs = [
        TaskExample("a", ("In the beginning </s> Answer:",), "God"),
        TaskExample("b", ("Jesus wept.",), "New"),
    ]
    pieces = [ExampleEncoder(tok, cfg.task, text_encoder=True).pieces(ex) for ex in exs]
    row = build_row(pieces, 64, 40, enc)
    word = [enc.tokenizer.encode(t).ids for t in ("In the beginning [SEP] Answer:", "Jesus wept.")]
    n1, n2 = len(word[0]), len(word[1])
    np.testing.assert_array_equal(row["enc_tokens"][: n1 + n2], word[0] + word[1])
    np.testing.assert_array_equal(row["enc_segment_ids"][: n1 + n2], [1] * n1 + [2] * n2)
    god, new = tok.encode("God") + [E], tok.encode("New") + [E]
    first = 1 + n1 + len(god)  # <s> slots target | <s> slots target
    np.testing.assert_array_equal(row["slot_index"][1 : 1 + n1], np.arange(n1))
    np.testing.assert_array_equal(row["slot_index"][first + 1 : first + 1 + n2], n1 + np.arange(n2))
    np.testing.assert_array_equal(row["tokens"][1 + n1 : first], god)
    w = np.nonzero(row["loss_weights"])[0]
    np.testing.assert_array_equal(row["targets"][w], god + new)
