"""SentencePiece tokenizer: trained on the training split at first use and cached, or loaded.

Special ids are fixed so every stage can rely on them:
  0 <pad>   1 <s> (start of sequence)   2 </s> (end of paragraph)   3 <unk>   4 </d> (end of doc)
A document becomes a list of "sentences" (paragraphs), each ending in </s>; the last one also
ends in </d>. Packing (packing.py) never splits a sentence unless it alone exceeds a row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm

from metalm_jax.types import ConfigError

PAD_ID, BOS_ID, EOS_ID, UNK_ID, EOD_ID = 0, 1, 2, 3, 4
EOD_PIECE = "</d>"


class Tokenizer:
    """A thin wrapper over a SentencePiece model with the project's special ids."""

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.source = source
        expected = {PAD_ID: "<pad>", BOS_ID: "<s>", EOS_ID: "</s>", UNK_ID: "<unk>", EOD_ID: "</d>"}
        for i, piece in expected.items():
            got = self.sp.id_to_piece(i) if i < self.sp.get_piece_size() else None
            if got != piece:
                raise ConfigError(
                    f"tokenizer {source}: id {i} must be {piece!r} (got {got!r}); train it with "
                    "metalm_jax.data.tokenizer.train_tokenizer or give pad=0,<s>=1,</s>=2,<unk>=3,"
                    "</d>=4"
                )

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (PAD_ID,)]
        return self.sp.decode(ids)

    def encode_document(self, paragraphs: list[str]) -> list[np.ndarray]:
        """Paragraph strings -> int32 sentences: each ends in </s>, the last also in </d>."""
        out = [np.asarray(self.sp.encode(p) + [EOS_ID], np.int32) for p in paragraphs]
        if out:
            out[-1] = np.append(out[-1], np.int32(EOD_ID))
        return out


def train_tokenizer(texts: Iterator[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """Trains a SentencePiece model on an iterator of paragraphs; returns the serialized model."""
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=texts,
        model_writer=proto,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        pad_piece="<pad>",
        bos_piece="<s>",
        eos_piece="</s>",
        unk_piece="<unk>",
        user_defined_symbols=[EOD_PIECE],
        byte_fallback=True,
        character_coverage=1.0,
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return proto.getvalue()


def load_or_train(
    cache_path: str, texts_fn, vocab_size: int, model_path: str | None = None
) -> Tokenizer:
    """Loads `model_path` if given, else `cache_path` if it exists, else trains and caches there.

    `texts_fn()` returns an iterator of training paragraphs; called only when training.
    """
    if model_path:
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"tokenizer model_path {model_path!r} does not exist")
        with open(model_path, "rb") as f:
            return Tokenizer(f.read(), model_path)
    if os.path.exists(cache_path):
        with open(cache_path, "rb") as f:
            tok = Tokenizer(f.read(), cache_path)
        if tok.vocab_size != vocab_size:
            raise ConfigError(
                f"cached tokenizer {cache_path} has vocab {tok.vocab_size}, config asks for "
                f"{vocab_size}: delete the file or use a fresh workdir"
            )
        return tok
    proto = train_tokenizer(texts_fn(), vocab_size)
    os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
    tmp = cache_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(proto)
    os.replace(tmp, cache_path)  # atomic: a crash never leaves a half-written model
    return Tokenizer(proto, cache_path)
