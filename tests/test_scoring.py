"""Option scoring picks the planted answer; the k-shot builder places each demonstration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalm_jax.data.tokenizer import BOS_ID, EOS_ID
from metalm_jax.eval.prompts import build_icl_row
from metalm_jax.eval.scoring import rank_options, row_logliks
from metalm_jax.types import Batch


class FakeLM:
    """Logits that put almost all mass on token 7 everywhere: option [7, 7] must win."""

    def apply(self, variables, batch):
        V = 16
        logits = jnp.where(jnp.arange(V) == 7, 10.0, 0.0)
        return jnp.broadcast_to(logits, (*batch.tokens.shape, V)), {}

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, FakeLM)


def test_option_scoring_picks_the_planted_answer():
    options = [[5, 6], [7, 7], [9]]
    rows = [build_icl_row([], [10, 11], o, seq_len=12, enc_len=8) for o in options] * 2
    scores = row_logliks(FakeLM(), {}, rows, batch_size=4)
    assert scores.shape == (6,)
    assert rank_options(scores, 3).tolist() == [1, 1]
    # exact values: log-softmax of the planted token and of the others
    lse = np.log(np.exp(10.0) + 15)
    # float32 log-softmax of a near-certain token: compare absolutely (the value is ~1e-3)
    np.testing.assert_allclose(scores[1], 2 * (10.0 - lse), rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores[2], -lse, rtol=1e-5)


def test_k_shot_row_layout_by_hand():
    demos = [([21, 22], [31]), ([23], [32, 33])]
    row = build_icl_row(demos, [24, 25], [41, 42], seq_len=16, enc_len=10)
    #        <s> [21 22] 31 </s> [23] 32 33 </s> [24 25] 41 42
    tokens = [BOS_ID, 21, 22, 31, EOS_ID, 23, 32, 33, EOS_ID, 24, 25, 41, 42]
    slots = [-1, 1, 2, -1, -1, 4, -1, -1, -1, 6, 7, -1, -1]
    np.testing.assert_array_equal(row["tokens"][:13], tokens)
    np.testing.assert_array_equal(row["slot_index"][:13], slots)
    np.testing.assert_array_equal(
        row["enc_tokens"][:8], [BOS_ID, 21, 22, BOS_ID, 23, BOS_ID, 24, 25]
    )
    np.testing.assert_array_equal(row["enc_segment_ids"][:8], [1, 1, 1, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(row["enc_positions"][:8], [0, 1, 2, 0, 1, 0, 1, 2])
    # each slot shows its encoder token; only the option is scored, from the position before it
    idx = row["slot_index"] >= 0
    np.testing.assert_array_equal(row["enc_tokens"][row["slot_index"][idx]], row["tokens"][idx])
    np.testing.assert_array_equal(np.where(row["loss_weights"] > 0)[0], [10, 11])
    np.testing.assert_array_equal(row["targets"][[10, 11]], [41, 42])
    Batch.from_dict({k: v[None] for k, v in row.items()}).validate()


def test_k_shot_row_that_does_not_fit_is_named():
    with pytest.raises(ValueError, match="encoder positions"):
        build_icl_row([([1] * 6, [2])], [3] * 6, [4], seq_len=64, enc_len=8)
    with pytest.raises(ValueError, match="decoder positions"):
        build_icl_row([], [3] * 6, [4] * 10, seq_len=8, enc_len=64)


@pytest.mark.slow  # near 10 s (default tier: tests/conftest.py)
def test_demonstration_outputs_reach_their_slots():
    """With a real (micro) model: changing demo 1's input changes the bank only in its segment."""
    from metalm_jax import testing
    from metalm_jax.model.build import model_config
    from metalm_jax.model.metalm import MetaLM

    cfg = testing.micro_config()
    model = MetaLM(model_config(cfg))
    row = build_icl_row([([21, 22], [31]), ([23], [32])], [24, 25], [41], seq_len=64, enc_len=24)
    batch = Batch.from_dict({k: v[None] for k, v in row.items()})
    params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
    enc = lambda b: np.asarray(model.apply({"params": params}, b, method=MetaLM.encode))
    base = enc(batch)
    toks = batch.enc_tokens.copy()
    toks[0, 1] = 99
    out = enc(batch.replace(enc_tokens=toks))
    seg = batch.enc_segment_ids[0]
    assert np.abs(out[0, seg == 1] - base[0, seg == 1]).max() > 1e-4
    np.testing.assert_allclose(out[0, seg >= 2], base[0, seg >= 2], atol=1e-5)


def test_few_shot_vqa_row_layout_by_hand():
    from metalm_jax.data.rows import ImageLayout
    from metalm_jax.eval.prompts import build_vqa_row

    layout = ImageLayout(
        seq_len=24,
        images_per_row=2,
        image_slots=2,
        prefix_len=3,
        text_bank=5,
        image_size=4,
        enc_length=5,
    )
    img1, img2 = np.full((4, 4, 3), 1, np.uint8), np.full((4, 4, 3), 2, np.uint8)
    row = build_vqa_row([(img1, [11, 12], [21])], (img2, [13]), [22, 23], layout)
    #   <s> [i1 i1][q11 q12] 21 </s> [i2 i2][q13] 22 23
    # bank: text 0..4, image 0 at 5.. (2 image + 3 prefix), image 1 at 10..
    np.testing.assert_array_equal(
        row["slot_index"][:12], [-1, 5, 6, 7, 8, -1, -1, 10, 11, 12, -1, -1]
    )
    np.testing.assert_array_equal(row["tokens"][5:7], [21, EOS_ID])
    np.testing.assert_array_equal(row["vl_prefix"], [[11, 12, 0], [13, 0, 0]])
    np.testing.assert_array_equal(row["vl_prefix_mask"], [[1, 1, 0], [1, 0, 0]])
    assert row["images"][1, 0, 0, 0] == 2 and row["image_valid"].tolist() == [1, 1]
    np.testing.assert_array_equal(np.where(row["loss_weights"] > 0)[0], [9, 10])
    np.testing.assert_array_equal(row["targets"][[9, 10]], [22, 23])
    with pytest.raises(ValueError, match="text_prefix=3"):
        build_vqa_row([], (img1, [1, 2, 3, 4]), [5], layout)
