"""In-context prompts in the paper's form (PAPER.md §4.2, Fig. 4d), as Batch rows, pure numpy.

Each demonstration's *input* is encoded separately by the text encoder (its own segment in the
encoder grid, with its own <s>, positions restarting) and occupies decoder slots; its *label* is
plain decoder tokens; examples are separated by </s>. The query's input is encoded the same way
and the candidate completion follows as decoder tokens:

    decoder:  <s> [slots: input 1] label 1 </s> [slots: input 2] label 2 </s> [slots: query] option
    encoder:  <s> input 1 | <s> input 2 | <s> query            (one segment each)

The loss weights mark exactly the option's tokens (each predicted from the position before it),
so the weighted NLL of a row is the option's negative log-likelihood (rank classification).
Rows are built by the one row builder (data/rows.py).
"""

from __future__ import annotations

from metalm_jax.data.rows import Enc, Image, Target, Text, build_row
from metalm_jax.data.tokenizer import SENTENCEPIECE_IDS, SpecialIds


def icl_pieces(demos, query, option, *, eos: int, encode_inputs: bool = True) -> list:
    """One k-shot example in the row language (data/rows.py): k finished demonstrations
    [Enc(input), Text(label </s>)], then [Enc(query), Target(option)]; `eos`: the tokenizer's
    </s> id. With encode_inputs=False (a decoder-only model) the inputs are decoder text."""
    inp = Enc if encode_inputs else Text
    pieces = []
    for x, label in demos:
        pieces += [inp(list(x)), Text(list(label) + [eos])]
    return pieces + [inp(list(query)), Target(list(option))]


def build_icl_row(
    demos,
    query,
    option,
    seq_len: int,
    enc_len: int,
    encoding=None,
    ids: SpecialIds = SENTENCEPIECE_IDS,
) -> dict:
    """demos: [(input_ids, label_ids)], query: input_ids, option: completion ids -> Batch row.

    `encoding` turns an input's decoder ids into encoder ids as in training (data/spans.py:
    SharedEncoding by default; a RetokenizedEncoding for an encoder with its own tokenizer,
    whose inputs then take as many slots as it returns vectors); `ids`: the tokenizer's.
    Raises DoesNotFit (a ValueError) naming what does not fit (decoder row or encoder grid).
    """
    pieces = icl_pieces(demos, query, option, eos=ids.eos)
    return build_row([pieces], seq_len, enc_len, encoding, ids=ids)


def build_vqa_row(demos, query, option, layout, ids: SpecialIds = SENTENCEPIECE_IDS) -> dict:
    """Few-shot VQA in the paper's form: every image is encoded with its question as the joint
    VL encoder's text prefix (one image slot group per example), answers are decoder tokens,
    examples end in </s>; the option follows the query's slots and is what the weights score.

    demos: [(image uint8[H, W, 3], question ids, answer ids)], query: (image, question ids),
    layout: an ImageLayout whose images_per_row >= len(demos) + 1 (prefix_len >= questions);
    ids: the tokenizer's special ids.

        <s> [img 1][q 1] a 1 </s> [img 2][q 2] a 2 </s> [img q][q q] option
    """
    pieces = []
    for img, q, a in demos:
        pieces += [Image(img, list(q)), Text(list(a) + [ids.eos])]
    pieces += [Image(query[0], list(query[1])), Target(list(option))]
    return build_row([pieces], layout.seq_len, layout.enc_length, layout=layout, ids=ids)
