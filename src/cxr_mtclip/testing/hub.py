"""A simulated Hugging Face Hub: BiomedCLIP, its text tower and the CLIP baseline in huggingface_hub's own cache layout.

The repos hold the published file names and formats (the facts and their sources are in docs/what-runs-where.md):

- ``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``: ``open_clip_config.json`` (for the full-size
  variant byte-identical to the published 707-byte file; the older revision with the ``proj``/``pooler_type`` keys
  on request), ``open_clip_pytorch_model.bin`` (a torch pickle, no safetensors file, whose state dict carries the
  legacy ``text.transformer.embeddings.position_ids`` buffer), ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json`` and ``vocab.txt``;
- ``microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract`` (or its former name ``...PubMedBERT...``): ``config.json``
  (BERT-base, vocab_size 30522, with or without ``model_type`` like its 2020 revisions), ``vocab.txt`` and
  ``tokenizer_config.json``;
- ``timm/vit_base_patch16_clip_224.openai``: ``open_clip_model.safetensors``, what open_clip fetches for
  ``("ViT-B-16", "openai")``.

The weights are random, created by open_clip itself from the written config (offline, against the cache being
written), so they have exactly the tensors open_clip's own loader expects. The vocabulary is a WordPiece trained on
the given report texts and padded with further sub-word pieces to the published size (28,895 entries, fewer than the
30,522 embedding rows, as published), with BERT's special tokens at ids 0-4. A tiny variant has the same layout under
``cxr-mtclip-simulated/...`` ids (timm's ``test_vit`` and a 2-layer BERT) for the fast test suite. Every simulated repo
also holds a README.md that says it is simulated (`is_simulated_repo`).

Why one module: the three repos are one simulation (the BiomedCLIP repo names its text tower's repo, and the CLIP
baseline's weights are written by the same cache writer), and the tests read it as one fixture.

Example:
    >>> hub = write_simulated_hub("sim_cache", variant="tiny", texts=["no acute disease"] * 10)  # doctest: +SKIP
    >>> CxrMtClipModel.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BIOMEDBERT_REPO",
    "BIOMEDCLIP_REPO",
    "CLIP_OPENAI_REPO",
    "PUBMEDBERT_REPO",
    "SIMULATED_MARKER",
    "TINY_BIOMEDBERT_REPO",
    "TINY_BIOMEDCLIP_REPO",
    "TINY_CLIP_REPO",
    "SimulatedHub",
    "biomedbert_config_json",
    "biomedclip_open_clip_config_json",
    "build_wordpiece_vocab",
    "default_report_texts",
    "hub_cache",
    "is_simulated_repo",
    "load_simulated_hub",
    "simulated_hub_for_tests",
    "tokenizer_files",
    "write_cached_repo",
    "write_simulated_clip",
    "write_simulated_hub",
]

BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BIOMEDBERT_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
PUBMEDBERT_REPO = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"  # the name before the 2023 rename
CLIP_OPENAI_REPO = "timm/vit_base_patch16_clip_224.openai"
TINY_BIOMEDCLIP_REPO = "cxr-mtclip-simulated/BiomedCLIP-tiny-test_vit"
TINY_BIOMEDBERT_REPO = "cxr-mtclip-simulated/BiomedBERT-tiny"
TINY_CLIP_REPO = "cxr-mtclip-simulated/CLIP-tiny"
SIMULATED_MARKER = "cxr_mtclip_simulated: true"

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0-4, as in BiomedCLIP's tokenizer.json
PUBLISHED_VOCAB_ENTRIES = 28895  # BiomedCLIP's tokenizer.json / PubMedBERT's vocab.txt: ids 0..28894
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
LFS_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".msgpack", ".h5")  # the Hub's default .gitattributes

_BERT_BASE = {  # BiomedBERT's published config.json (2020 revision: these keys only, no model_type)
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}
_BERT_TINY = dict(_BERT_BASE, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                  vocab_size=2048)
_TINY_VOCAB_ENTRIES = 2000  # fewer entries than embedding rows, like the published pair 28,895 / 30,522


# -- huggingface_hub's cache layout ---------------------------------------------------------------------------


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_cached_repo(
    cache_dir: str | os.PathLike,
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    absent: Iterable[str] = (),
    ref: str = "main",
    revision: str | None = None,
) -> Path:
    """Write one revision of a model repo as huggingface_hub 2.x caches it; returns the snapshot folder.

    ``models--{org}--{name}/blobs/<etag>`` holds each file once, named by its git blob sha1 (or by its sha256 when
    the Hub stores it in LFS: weights); ``snapshots/<commit>/<file>`` are relative symlinks to the blobs;
    ``refs/<ref>`` holds the 40-hex commit; ``.no_exist/<commit>/<file>`` records files a client looked for and the
    Hub did not have. The commit is a hash of the file list unless `revision` is given.

    Example:
        >>> write_cached_repo("cache", "org/repo", {"config.json": b"{}"})  # doctest: +SKIP
    """
    from huggingface_hub.file_download import repo_folder_name

    storage = Path(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")
    etags = {
        name: hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else _git_blob_sha1(data)
        for name, data in files.items()
    }
    commit = revision or hashlib.sha1(
        json.dumps(sorted(etags.items()) + [["absent", sorted(absent)]]).encode()
    ).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(f"revision must be a 40-hex commit hash, got {commit!r}")
    snapshot = storage / "snapshots" / commit
    for name, data in files.items():
        blob = storage / "blobs" / etags[name]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.is_file():
            tmp = blob.with_name(blob.name + ".incomplete")
            tmp.write_bytes(data)
            os.replace(tmp, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    for name in absent:
        marker = storage / ".no_exist" / commit / name
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    ref_file = storage / "refs" / ref
    ref_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref_file.with_name(ref_file.name + ".tmp")  # atomically, as huggingface_hub writes refs
    tmp.write_text(commit)
    os.replace(tmp, ref_file)
    return snapshot


@contextlib.contextmanager
def hub_cache(cache_dir: str | os.PathLike, *, offline: bool = True) -> Iterator[Path]:
    """Make `cache_dir` the default Hub cache (and turn offline mode on) for the duration of the block.

    open_clip reads its text tower's config by name from the default cache (it passes no ``cache_dir``), so a
    simulated repo is found only there. huggingface_hub reads ``HF_HUB_CACHE``/``HF_HUB_OFFLINE`` once at import;
    the block sets the environment variables and the already-imported constants, and restores both.
    """
    from huggingface_hub import constants

    cache = Path(cache_dir).resolve()
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1" if offline else "0"}
    if offline:
        env["TRANSFORMERS_OFFLINE"] = "1"
    saved_env = {key: os.environ.get(key) for key in env}
    saved = (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    os.environ.update(env)
    constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(cache), offline
    try:
        yield cache
    finally:
        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_simulated_repo(repo_id: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when the cached copy of `repo_id` was written by this module (its README.md says so); no network.

    Example:
        >>> is_simulated_repo("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")  # doctest: +SKIP
        False
    """
    from huggingface_hub import try_to_load_from_cache

    repo_id = repo_id.removeprefix("hf-hub:")
    path = try_to_load_from_cache(repo_id, "README.md", cache_dir=str(cache_dir) if cache_dir else None)
    if not isinstance(path, str):
        return False
    try:
        return SIMULATED_MARKER in Path(path).read_text(encoding="utf-8")
    except OSError:
        return False


def _readme(repo_id: str, what: str, extra: str = "") -> bytes:
    return (
        f"---\n{SIMULATED_MARKER}\ntags:\n- simulated\n---\n\n# {repo_id} (SIMULATED)\n\n"
        f"Written locally by `cxr_mtclip.testing.hub`: {what} Random weights created by open_clip from the config; "
        f"not the published model. Only for offline tests and benchmarks.\n\n{extra}"
    ).encode()


# -- configs as published ----------------------------------------------------------------------------------------


def biomedclip_open_clip_config_json(
    variant: str = "full", *, older_revision: bool = False, text_repo_id: str | None = None
) -> bytes:
    """BiomedCLIP's ``open_clip_config.json`` bytes (indent 2, no trailing newline, as published).

    ``variant="full"`` with the defaults is byte-identical to the published main revision (707 bytes);
    ``older_revision=True`` uses the keys ``proj``/``pooler_type`` of the revision before the rename (696 bytes).
    ``variant="tiny"``: the same layout with timm's ``test_vit`` (160 px, its native size: open_clip builds timm
    towers at their default size) and the tiny text tower repo.
    """
    if variant not in ("full", "tiny"):
        raise ValueError(f"variant must be 'full' or 'tiny', got {variant!r}")
    text = text_repo_id or (BIOMEDBERT_REPO if variant == "full" else TINY_BIOMEDBERT_REPO)
    proj, pooler = ("proj", "pooler_type") if older_revision else ("hf_proj_type", "hf_pooler_type")
    config = {
        "model_cfg": {
            "embed_dim": 512 if variant == "full" else 32,
            "vision_cfg": {
                "timm_model_name": "vit_base_patch16_224" if variant == "full" else "test_vit",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 224 if variant == "full" else 160,
            },
            "text_cfg": {
                "hf_model_name": text,
                "hf_tokenizer_name": text,
                proj: "mlp",
                pooler: "cls_last_hidden_state_pooler",
                "context_length": 256,
            },
        },
        "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD},
    }
    return json.dumps(config, indent=2).encode()


def biomedbert_config_json(variant: str = "full", *, model_type: bool = True) -> bytes:
    """BiomedBERT's ``config.json``: BERT-base (vocab 30522, 512 positions, 2 token types).

    ``model_type=False`` gives the 2020 revisions (no ``model_type``, no ``architectures``; 313 bytes for the full
    variant); ``True`` the current one, which adds ``"architectures": ["BertForMaskedLM"]`` and ``"model_type": "bert"``.
    """
    config = dict(_BERT_BASE if variant == "full" else _BERT_TINY)
    if model_type:
        config.update(architectures=["BertForMaskedLM"], model_type="bert")
    return (json.dumps(dict(sorted(config.items())), indent=2) + "\n").encode()


# -- the vocabulary and the four tokenizer files --------------------------------------------------------------


def default_report_texts(openi_dir: str | os.PathLike | None = None, n_synthetic: int = 400) -> tuple[list[str], str]:
    """Report texts to train the simulated vocabulary on, and where they came from.

    The real OpenI reports (``<openi_dir>/reports.csv``, column ``report``) when present; otherwise synthetic
    template reports from `cxr_mtclip.data.phantoms`. Nothing derived from OpenI is ever written outside the cache.
    """
    if openi_dir is not None:
        path = Path(openi_dir) / "reports.csv"
        if path.is_file():
            import csv

            with open(path, newline="", encoding="utf-8") as handle:
                texts = [row["report"] for row in csv.DictReader(handle) if (row.get("report") or "").strip()]
            if texts:
                return texts, f"{len(texts)} real OpenI reports ({path})"
    import numpy as np

    from ..data.phantoms import template_report

    rng = np.random.default_rng(0)
    texts = []
    for i in range(n_synthetic):
        sections, _ = template_report(bool(i % 2), rng)
        texts.append(" ".join(v for v in sections.values() if v))
    return texts, f"{len(texts)} synthetic template reports (cxr_mtclip.data.phantoms)"


def build_wordpiece_vocab(texts: Sequence[str], size: int) -> list[str]:
    """A lower-cased BERT WordPiece vocabulary of exactly `size` entries, `SPECIAL_TOKENS` at ids 0-4.

    A WordPiece is trained on `texts`; when the texts support fewer entries (a few thousand reports do), further
    word-initial and ``##`` sub-word pieces of the corpus words, then of letter n-grams, fill it up, in a fixed
    order. Deterministic for given texts and size.
    """
    from tokenizers import BertWordPieceTokenizer

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("build_wordpiece_vocab needs at least one non-empty text")
    trainer = BertWordPieceTokenizer(lowercase=True)
    words: Counter[str] = Counter()
    for text in texts:
        for word, _ in trainer.pre_tokenizer.pre_tokenize_str(trainer.normalizer.normalize_str(text)):
            words[word] += 1
    # continuation pieces listed up front get fixed ids (the trainer numbers them in hash-map order otherwise)
    pieces = sorted({f"##{c}" for word in words for c in word[1:]})
    chars = sorted({c for word in words for c in word})
    trainer.train_from_iterator(texts, vocab_size=max(size, len(SPECIAL_TOKENS) + 1), min_frequency=1,
                                show_progress=False, special_tokens=[*SPECIAL_TOKENS, *chars, *pieces])
    trained = sorted(trainer.get_vocab().items(), key=lambda item: item[1])
    vocab = list(dict.fromkeys(token for token, _ in trained))[:size]
    seen = set(vocab)

    def fillers() -> Iterator[str]:
        substrings: Counter[str] = Counter()
        for word, count in words.items():
            for start in range(len(word)):
                for end in range(start + 2, min(len(word), start + 12) + 1):
                    substrings[word[start:end] if start == 0 else "##" + word[start:end]] += count
        yield from (s for s, _ in sorted(substrings.items(), key=lambda item: (-item[1], item[0])))
        letters = "abcdefghijklmnopqrstuvwxyz"
        for n in range(2, 6):
            for index in range(len(letters) ** n):
                gram = "".join(letters[(index // len(letters) ** k) % len(letters)] for k in reversed(range(n)))
                yield gram
                yield "##" + gram

    if len(vocab) < size:
        for token in fillers():
            if token not in seen:
                vocab.append(token)
                seen.add(token)
                if len(vocab) == size:
                    break
    if vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS) or len(vocab) != size:
        raise RuntimeError(f"could not build a {size}-entry vocabulary (got {len(vocab)})")
    return vocab


def tokenizer_files(vocab: Sequence[str], context_length: int = 256) -> dict[str, bytes]:
    """BiomedCLIP's four tokenizer files for `vocab`, with the published fields.

    ``tokenizer.json`` (tokenizers 1.0 format: BertNormalizer lower-casing, BertPreTokenizer, WordPiece, ``[CLS] $A
    [SEP]``, truncation and fixed padding to `context_length`), ``tokenizer_config.json`` (tokenizer_class
    BertTokenizer, model_max_length 1e30, 394 bytes), ``special_tokens_map.json`` (125 bytes) and ``vocab.txt``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.enable_truncation(context_length)
    tokenizer.enable_padding(length=context_length, pad_id=ids["[PAD]"], pad_token="[PAD]")
    tokenizer_config = {
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "do_basic_tokenize": True,
        "do_lower_case": True,
        "mask_token": "[MASK]",
        "model_max_length": 1000000000000000019884624838656,
        "never_split": None,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": None,
        "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    }
    special_tokens_map = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
                          "unk_token": "[UNK]"}
    return {
        "special_tokens_map.json": (json.dumps(special_tokens_map, indent=2) + "\n").encode(),
        "tokenizer.json": tokenizer.to_str(pretty=True).encode(),
        "tokenizer_config.json": (json.dumps(tokenizer_config, indent=2) + "\n").encode(),
        "vocab.txt": ("\n".join(vocab) + "\n").encode(),
    }


# -- weights, created by open_clip itself ----------------------------------------------------------------------


def _torch_pickle(state: Mapping[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def _open_clip_state_dict(model_name: str, cache_dir: Path, seed: int, **kwargs: Any) -> dict[str, Any]:
    """The state dict of a random-init open_clip model built by open_clip from `cache_dir` (offline)."""
    import logging

    import open_clip
    import torch

    with hub_cache(cache_dir), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # open_clip logs "no weights found": expected here
        try:
            model = open_clip.create_model(model_name, pretrained=None, pretrained_text=False, cache_dir=str(cache_dir),
                                             **kwargs)
        finally:
            logging.getLogger().setLevel(level)
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def _with_legacy_position_ids(state: dict[str, Any], max_positions: int) -> dict[str, Any]:
    """Insert BERT's int64 ``position_ids`` buffer where transformers < 4.31 put it (first key of the embeddings)."""
    import torch

    key = "text.transformer.embeddings.position_ids"
    out: dict[str, Any] = {}
    for name, value in state.items():
        if name.startswith("text.transformer.embeddings.") and key not in out:
            out[key] = torch.arange(max_positions, dtype=torch.int64).unsqueeze(0)
        out[name] = value
    if key not in out:
        raise RuntimeError("the open_clip model has no text.transformer.embeddings: not a Hugging Face text tower")
    return out


@dataclass
class SimulatedHub:
    """What `write_simulated_hub` wrote: the cache folder, the ids to load, and the facts of the simulation."""

    cache_dir: Path
    variant: str
    biomedclip_repo: str
    text_repo: str
    biomedclip_snapshot: Path
    text_snapshot: Path
    vocab_size: int
    texts_source: str
    clip_model: str | None = None
    clip_pretrained: str | None = None
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def biomedclip_id(self) -> str:
        """The open_clip model name: ``hf-hub:<repo>``."""
        return f"hf-hub:{self.biomedclip_repo}"

    @property
    def image_size(self) -> int:
        """The image size of the simulated BiomedCLIP config (224 full, 160 tiny)."""
        config = json.loads((self.biomedclip_snapshot / "open_clip_config.json").read_text(encoding="utf-8"))
        return int(config["model_cfg"]["vision_cfg"]["image_size"])



HUB_ENV = "CXR_MTCLIP_SIMULATED_HUB"
_VOCAB_LINE = "Vocabulary trained on: "


def load_simulated_hub(cache_dir: str | os.PathLike) -> SimulatedHub:
    """Describe a cache a previous `write_simulated_hub` (e.g. scripts/simulated_hub.py) wrote, from the cache itself.

    The simulated repos are recognised by their README (`is_simulated_repo`); nothing else is stored in the cache,
    which stays exactly huggingface_hub's layout.
    """
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache_dir)
    for variant, repo, clip_repo, clip in (("full", BIOMEDCLIP_REPO, CLIP_OPENAI_REPO, ("ViT-B-16", "openai")),
                                           ("tiny", TINY_BIOMEDCLIP_REPO, TINY_CLIP_REPO, (f"hf-hub:{TINY_CLIP_REPO}", None))):
        if not is_simulated_repo(repo, cache):
            continue
        config_file = Path(try_to_load_from_cache(repo, "open_clip_config.json", cache_dir=str(cache)))
        text_repo = json.loads(config_file.read_text(encoding="utf-8"))["model_cfg"]["text_cfg"]["hf_model_name"]
        text_snapshot = Path(try_to_load_from_cache(text_repo, "config.json", cache_dir=str(cache))).parent
        readme = (config_file.parent / "README.md").read_text(encoding="utf-8")
        source = next((line[len(_VOCAB_LINE):] for line in readme.splitlines() if line.startswith(_VOCAB_LINE)), "")
        vocab = (config_file.parent / "vocab.txt").read_text(encoding="utf-8").splitlines()
        with_clip = is_simulated_repo(clip_repo, cache)
        return SimulatedHub(
            cache_dir=cache, variant=variant, biomedclip_repo=repo, text_repo=text_repo,
            biomedclip_snapshot=config_file.parent, text_snapshot=text_snapshot, vocab_size=len(vocab),
            texts_source=source, clip_model=clip[0] if with_clip else None, clip_pretrained=clip[1] if with_clip else None,
        )
    raise FileNotFoundError(f"{cache}: holds no simulated BiomedCLIP repo (write one with scripts/simulated_hub.py)")


def simulated_hub_for_tests(default_dir: str | os.PathLike) -> SimulatedHub:
    """The cache named by ``$CXR_MTCLIP_SIMULATED_HUB`` (the full-size one from scripts/simulated_hub.py), else a
    tiny one (with the CLIP baseline) written to `default_dir`: the same tests run on either."""
    env = os.environ.get(HUB_ENV)
    if env:
        return load_simulated_hub(env)
    return write_simulated_hub(default_dir, variant="tiny", clip=True)


def write_simulated_hub(
    cache_dir: str | os.PathLike,
    *,
    variant: str = "tiny",
    texts: Sequence[str] | None = None,
    texts_source: str = "given texts",
    older_revision: bool = False,
    text_model_type: bool = True,
    text_repo: str | None = None,
    weights: bool = True,
    clip: bool = False,
    seed: int = 0,
) -> SimulatedHub:
    """Write the simulated BiomedCLIP repo and its text tower repo (and optionally the CLIP baseline) into `cache_dir`.

    Args:
        variant: ``"full"`` (the published ids and sizes: an ~784 MB pickle) or ``"tiny"`` (same layout,
            ``cxr-mtclip-simulated/...`` ids, a few MB).
        texts: report texts for the vocabulary (default: `default_report_texts` of ../shared/openi if found).
        older_revision: BiomedCLIP's config with the old ``proj``/``pooler_type`` keys; with `text_repo` unset the
            text tower is then named by its former ``...PubMedBERT...`` id (full variant).
        text_model_type: whether the text tower's ``config.json`` has ``model_type`` (its revisions before
            Sept. 2021 had none).
        weights: write ``open_clip_pytorch_model.bin`` (False: a cache where the weights were never fetched).
        clip: also write the CLIP baseline repo (`write_simulated_clip`).
    """
    if variant not in ("full", "tiny"):
        raise ValueError(f"variant must be 'full' or 'tiny', got {variant!r}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if texts is None:
        texts, texts_source = default_report_texts(_default_openi_dir())
    clip_repo = BIOMEDCLIP_REPO if variant == "full" else TINY_BIOMEDCLIP_REPO
    if text_repo is None:
        text_repo = (PUBMEDBERT_REPO if older_revision else BIOMEDBERT_REPO) if variant == "full" else TINY_BIOMEDBERT_REPO
    open_clip_config = biomedclip_open_clip_config_json(variant, older_revision=older_revision, text_repo_id=text_repo)
    vocab = build_wordpiece_vocab(texts, PUBLISHED_VOCAB_ENTRIES if variant == "full" else _TINY_VOCAB_ENTRIES)
    tok_files = tokenizer_files(vocab)
    text_files = {
        "config.json": biomedbert_config_json(variant, model_type=text_model_type),
        "tokenizer_config.json": (json.dumps({"do_lower_case": True}, indent=2) + "\n").encode(),
        "vocab.txt": tok_files["vocab.txt"],
        "README.md": _readme(text_repo, "BERT config and vocabulary (no weights: open_clip never fetches them)."),
    }
    clip_files: dict[str, bytes] = {
        "open_clip_config.json": open_clip_config,
        **tok_files,
        "README.md": _readme(clip_repo, "open_clip config, tokenizer files and a torch-pickle checkpoint.",
                             f"{_VOCAB_LINE}{texts_source}\n"),
    }
    if weights:
        # open_clip builds the model from the config it reads from a cache: the new config with the current
        # key names (open_clip 3.x no longer reads the old ones) and a text config that has model_type
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            write_cached_repo(scratch, clip_repo, {"open_clip_config.json": biomedclip_open_clip_config_json(
                variant, text_repo_id=text_repo)})
            write_cached_repo(scratch, text_repo, {"config.json": biomedbert_config_json(variant, model_type=True)})
            state = _open_clip_state_dict(f"hf-hub:{clip_repo}", Path(scratch), seed)
        max_positions = int(json.loads(text_files["config.json"])["max_position_embeddings"])
        clip_files["open_clip_pytorch_model.bin"] = _torch_pickle(_with_legacy_position_ids(state, max_positions))
    # open_clip asks for open_clip_model.safetensors first; the Hub answers 404, which the cache records
    clip_snapshot = write_cached_repo(cache, clip_repo, clip_files, absent=["open_clip_model.safetensors"])
    text_snapshot = write_cached_repo(cache, text_repo, text_files)
    hub = SimulatedHub(
        cache_dir=cache, variant=variant, biomedclip_repo=clip_repo, text_repo=text_repo,
        biomedclip_snapshot=clip_snapshot, text_snapshot=text_snapshot, vocab_size=len(vocab),
        texts_source=texts_source,
        files={clip_repo: {k: len(v) for k, v in clip_files.items()}, text_repo: {k: len(v) for k, v in text_files.items()}},
    )
    if clip:
        hub.clip_model, hub.clip_pretrained = write_simulated_clip(cache, variant=variant, seed=seed)
    return hub


_TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {"mean": CLIP_MEAN, "std": [0.26862954, 0.26130258, 0.27577711]},
}


def write_simulated_clip(cache_dir: str | os.PathLike, *, variant: str = "tiny", seed: int = 0) -> tuple[str, str | None]:
    """Write the CLIP baseline repo; returns the ``(model_name, pretrained)`` pair to give open_clip.

    Full: ``timm/vit_base_patch16_clip_224.openai`` with ``open_clip_model.safetensors`` (what open_clip fetches
    for ``("ViT-B-16", "openai")``; random weights from open_clip's own ViT-B-16 with QuickGELU) ->
    ``("ViT-B-16", "openai")``. Tiny: an ``hf-hub:`` repo with ``open_clip_config.json`` and the same weight file
    -> ``("hf-hub:cxr-mtclip-simulated/CLIP-tiny", None)``; both tokenize with open_clip's built-in BPE.
    """
    from safetensors.torch import save

    cache = Path(cache_dir)
    if variant == "full":
        state = _open_clip_state_dict("ViT-B-16", cache, seed, force_quick_gelu=True)
        files = {"open_clip_model.safetensors": save(state),
                 "README.md": _readme(CLIP_OPENAI_REPO, "open_clip weights of CLIP ViT-B/16 (openai layout).")}
        write_cached_repo(cache, CLIP_OPENAI_REPO, files)
        return "ViT-B-16", "openai"
    if variant != "tiny":
        raise ValueError(f"variant must be 'full' or 'tiny', got {variant!r}")
    config = json.dumps(_TINY_CLIP_CONFIG, indent=2).encode()
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        write_cached_repo(scratch, TINY_CLIP_REPO, {"open_clip_config.json": config})
        state = _open_clip_state_dict(f"hf-hub:{TINY_CLIP_REPO}", Path(scratch), seed)
    files = {"open_clip_config.json": config, "open_clip_model.safetensors": save(state),
             "README.md": _readme(TINY_CLIP_REPO, "a two-layer open_clip CLIP (width 32) with its config.")}
    write_cached_repo(cache, TINY_CLIP_REPO, files)
    return f"hf-hub:{TINY_CLIP_REPO}", None


def _default_openi_dir() -> Path | None:
    env = os.environ.get("CXR_MTCLIP_OPENI")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "openi"
        if (parent / "pyproject.toml").is_file() and (candidate / "reports.csv").is_file():
            return candidate
    return None
