"""The run's decoder tokenizer: an object the run carries, its special ids as attributes.

Two kinds, both with `encode`, `decode`, `encode_document`, `vocab_size`, `source`, `kind` and the
special ids `pad`, `bos`, `eos`, `unk`, `doc_end` (`ids`: all five as a `SpecialIds`):

  * `Tokenizer` (SentencePiece, trained on the training split at first use and cached in the
    workdir as tokenizer.model, or loaded). Its special ids are fixed:
      0 <pad>  1 <s> (start of sequence)  2 </s> (end of paragraph)  3 <unk>  4 </d> (end of doc)
  * `JsonTokenizer` (a Hugging Face tokenizer.json, e.g. GPT-2's byte-level BPE, for a decoder
    initialised from a pretrained model; saved in the workdir as tokenizer.json). Its special
    ids come from its own tokens (see `JsonTokenizer`); GPT-2, whose one special token is
    <|endoftext|>, maps all five onto it.

A document becomes a list of "sentences" (paragraphs), each ending in </s>; the last one also
ends in </d> (unless </d> is </s>, as for GPT-2). Packing (packing.py) never splits a sentence
unless it alone exceeds a row. Library code reads a tokenizer's ids, never the SentencePiece
constants below (they name the SentencePiece layout, for its trainer and for tests).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterable, Iterator

import numpy as np
import sentencepiece as spm
from etils import epath

from metalm_jax import paths
from metalm_jax.types import ConfigError


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """A tokenizer's special token ids (hashable: usable as a static jit argument)."""

    pad: int  # fills padding positions (segment 0, weight 0: never attended, never a target)
    bos: int  # <s>: starts every decoder segment and every span in the text encoder
    eos: int  # </s>: ends every paragraph, a task target, a caption; the prompt separator
    unk: int  # <unk>
    doc_end: int  # </d>: ends a document; generation of plain text stops there


SENTENCEPIECE_IDS = SpecialIds(pad=0, bos=1, eos=2, unk=3, doc_end=4)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, EOD_ID = dataclasses.astuple(SENTENCEPIECE_IDS)
EOD_PIECE = "</d>"
SAVED_NAMES = ("tokenizer.json", "tokenizer.model")  # the run's copy in its workdir, by kind


class _Specials:
    """The five special ids as attributes, from `self.ids`."""

    ids: SpecialIds

    pad = property(lambda self: self.ids.pad)
    bos = property(lambda self: self.ids.bos)
    eos = property(lambda self: self.ids.eos)
    unk = property(lambda self: self.ids.unk)
    doc_end = property(lambda self: self.ids.doc_end)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_document(self, paragraphs: list[str]) -> list[np.ndarray]:
        """Paragraph strings -> int32 sentences: each ends in </s>, the last also in </d>
        (once: a tokenizer whose </d> is its </s> ends the document with one)."""
        out = [np.asarray(self.encode(p) + [self.eos], np.int32) for p in paragraphs]
        if out and self.doc_end != self.eos:
            out[-1] = np.append(out[-1], np.int32(self.doc_end))
        return out


class Tokenizer(_Specials):
    """A thin wrapper over a SentencePiece model with the project's special ids."""

    kind = "sentencepiece"
    saved_name = "tokenizer.model"
    ids = SENTENCEPIECE_IDS

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
        ids = [int(i) for i in ids if int(i) != self.pad]
        return self.sp.decode(ids)


class JsonTokenizer(_Specials):
    """A Hugging Face tokenizer.json (via the `tokenizers` library), e.g. GPT-2's byte-level BPE.

    Special ids by token: <s>/</s>/<pad>/<unk>/</d> when the vocabulary has them; otherwise
    <s> and </s> are <|endoftext|> (GPT-2's only special token, its own bos and eos) and a
    missing <pad>, <unk> or </d> is mapped onto </s> (`mapped` names them). Mapping, not adding
    ids, keeps the pretrained embedding and the source's own ids: pad positions are never
    attended nor targets (segment 0, weight 0), byte-level BPE never produces <unk>, and a
    document ends with one <|endoftext|> as in GPT-2's pretraining (docs/ARCHITECTURE.md).
    Text is encoded without the tokenizer's own special tokens (the data adds ours).
    """

    kind = "json"
    saved_name = "tokenizer.json"
    NAMES = {  # our special -> the tokens that can be it, in order
        "bos": ("<s>", "<|endoftext|>"),
        "eos": ("</s>", "<|endoftext|>"),
        "pad": ("<pad>",),
        "unk": ("<unk>",),
        "doc_end": (EOD_PIECE,),
    }

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self.hf = HFTokenizer.from_str(epath.Path(path).read_text(encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - the library raises plain Exceptions
            raise ConfigError(
                f"data.tokenizer_path: cannot read {path} as a Hugging Face tokenizer.json ({e})"
            ) from None
        self.hf.no_truncation()
        self.hf.no_padding()
        self.source = path
        found = {}
        for name, tokens in self.NAMES.items():
            ids = [self.hf.token_to_id(t) for t in tokens]
            found[name] = next((i for i in ids if i is not None), None)
        if found["eos"] is None:
            raise ConfigError(
                f"tokenizer {path}: has neither </s> nor <|endoftext|>, so nothing can end a "
                "paragraph or a generation"
            )
        self.mapped = tuple(n for n in ("bos", "pad", "unk", "doc_end") if found[n] is None)
        self.ids = SpecialIds(
            **{n: found[n] if found[n] is not None else found["eos"] for n in found}
        )

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)


def open_tokenizer(path: str) -> Tokenizer | JsonTokenizer:
    """A tokenizer file by kind: a Hugging Face tokenizer.json, or a SentencePiece model; a
    directory: its tokenizer.json, else its tokenizer.model. Local or a URL (paths.py)."""
    if epath.Path(path).is_dir():
        found = [str(epath.Path(path) / n) for n in SAVED_NAMES if (epath.Path(path) / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"tokenizer {path}: a directory with no {' or '.join(SAVED_NAMES)}"
            )
        path = found[0]
    if not epath.Path(path).exists():
        raise FileNotFoundError(f"tokenizer model_path {path!r} does not exist")
    data = epath.Path(path).read_bytes()
    if path.endswith(".json") or data[:64].lstrip().startswith(b"{"):
        return JsonTokenizer(path)
    return Tokenizer(data, path)


def configured_path(data_tokenizer_path: str, init_entries) -> str:
    """The decoder's tokenizer a config names: data.tokenizer_path, else the tokenizer.json
    beside an `init` entry's hf_gpt2 decoder (the decoder then reads its own ids), else ""."""
    if data_tokenizer_path:
        return data_tokenizer_path
    from metalm_jax.resources import resolve_path

    for entry in init_entries:
        entry = dict(entry)
        if entry.get("format") == "hf_gpt2" and entry.get("source"):
            path = os.path.join(resolve_path(entry["source"]), "tokenizer.json")
            if os.path.isfile(path):
                return path
    return ""


def _save_copy(src: str, dst: str) -> None:
    """`src` copied to `dst` atomically (a crash never leaves half a file), unless it is it."""
    if paths.is_remote(src) or paths.is_remote(dst):
        if os.fspath(src) == os.fspath(dst):
            return
    elif os.path.exists(dst) and os.path.samefile(src, dst):
        return
    paths.copy_file(src, dst)


def for_run(workdir: str, path: str, texts_fn, vocab_size: int) -> Tokenizer | JsonTokenizer:
    """A training run's tokenizer: `path` (configured_path) if given, a tokenizer.json being
    saved in the workdir (so the run stays usable if the source goes); else the workdir's saved
    tokenizer.json; else load_or_train's SentencePiece (cached as tokenizer.model)."""
    if path:
        tok = open_tokenizer(path)
        if isinstance(tok, JsonTokenizer):
            _save_copy(tok.source, _join(workdir, tok.saved_name))
        return tok
    saved = _join(workdir, JsonTokenizer.saved_name)
    if epath.Path(saved).is_file():
        return JsonTokenizer(saved)
    return load_or_train(_join(workdir, Tokenizer.saved_name), texts_fn, vocab_size)


def saved(workdir: str, path: str = "") -> Tokenizer | JsonTokenizer:
    """A trained run's tokenizer (for inference): the workdir's tokenizer.json, else `path`
    (data.tokenizer_path of its config), else the workdir's tokenizer.model."""
    json_path = _join(workdir, JsonTokenizer.saved_name)
    if epath.Path(json_path).is_file():
        return JsonTokenizer(json_path)
    return open_tokenizer(path or _join(workdir, Tokenizer.saved_name))


def _join(workdir: str, name: str) -> str:
    """<workdir>/<name> as a string (a tokenizer's `source`), the workdir local or a URL."""
    return os.fspath(epath.Path(workdir) / name)


def train_tokenizer(texts: Iterator[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """Trains a SentencePiece model on an iterator of paragraphs; returns the serialized model.
    A vocabulary the text cannot fill is a ConfigError naming data.vocab_size and the most the
    text allows (SentencePiece's own RuntimeError says it deep in a traceback)."""
    proto = io.BytesIO()
    try:
        _train_sentencepiece(texts, proto, vocab_size, model_type)
    except RuntimeError as e:
        most = re.search(
            r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(e)
        )
        if most is None:
            raise
        raise ConfigError(
            f"data.vocab_size={vocab_size}: the tokenizer's training text allows at most "
            f"{most.group(1)} SentencePiece pieces; lower data.vocab_size or give more text"
        ) from None
    return proto.getvalue()


def _train_sentencepiece(texts, proto, vocab_size: int, model_type: str) -> None:
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


def load_or_train(
    cache_path: str, texts_fn, vocab_size: int, model_path: str | None = None
) -> Tokenizer:
    """Loads `model_path` if given, else `cache_path` if it exists, else trains and caches there.

    `texts_fn()` returns an iterator of training paragraphs; called only when training.
    """
    if model_path:
        return open_tokenizer(model_path)
    if epath.Path(cache_path).exists():
        tok = Tokenizer(epath.Path(cache_path).read_bytes(), cache_path)
        if tok.vocab_size != vocab_size:
            raise ConfigError(
                f"cached tokenizer {cache_path} has vocab {tok.vocab_size}, config asks for "
                f"{vocab_size}: delete the file or use a fresh workdir"
            )
        return tok
    proto = train_tokenizer(texts_fn(), vocab_size)
    paths.write_atomic(cache_path, proto)  # a crash never leaves a half-written model
    return Tokenizer(proto, cache_path)
