"""CxrMtClipProcessor: the image processor and the BERT tokenizer behind one call, as a transformers `ProcessorMixin`.

``processor(images=..., text=..., labels=...)`` gives ``pixel_values``, ``input_ids``, ``attention_mask`` (and
``labels``). Reports are cleaned as open_clip's ``HFTokenizer`` cleans them for BiomedCLIP (``clean="whitespace"``:
ftfy's mojibake fix, HTML entities unescaped twice, whitespace runs collapsed) and padded to the longest report of
the batch, truncated to ``max_length`` (BiomedCLIP: 256).

Saved folders hold the tokenizer files and ``processor_config.json`` (the image processor's section, ``max_length``,
``clean``); `AutoProcessor` / `AutoImageProcessor` return these classes once `cxr_mtclip` is imported. Folders
written before (a flat ``processor_config.json`` with ``image_size``, ``image_mean``, ``image_std``,
``max_length``) load too.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase
from transformers.processing_utils import ProcessorMixin

from .atomic import atomic_directory, atomic_update_directory
from .configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID, CLIP_MEAN, CLIP_STD, CxrMtClipConfig
from .image_processing_cxr_mtclip import CxrMtClipImageProcessor, to_rgb
from .registry import get_architecture, is_registered
from .utils import read_json

__all__ = [
    "PROCESSOR_CONFIG_NAME",
    "CxrMtClipProcessor",
    "build_wordpiece_tokenizer",
    "clean_report",
    "model_inputs",
    "report_list",
    "to_rgb",
]

PROCESSOR_CONFIG_NAME = "processor_config.json"
CLEAN_MODES = ("whitespace", "lower", "none")
# processor_config.json fields of folders saved before the processor was a ProcessorMixin.
_LEGACY_FIELDS = {"image_size", "image_mean", "image_std", "max_length", "processor_class"}
_FIELDS = {"image_processor", "max_length", "clean", "processor_class", "auto_map"}


def report_list(text: str | Sequence[str]) -> list[str]:
    """One report or a sequence of them as a list; ValueError naming the first empty or non-string report.

    Example:
        >>> report_list("No acute disease.")
        ['No acute disease.']
    """
    texts = [text] if isinstance(text, str) else list(text)
    for i, report in enumerate(texts):
        if not isinstance(report, str) or not report.strip():
            raise ValueError(f"report {i} is empty or not a string: {report!r}")
    return texts


def clean_report(text: str, clean: str = "whitespace") -> str:
    """A report cleaned as open_clip's ``HFTokenizer`` cleans text before tokenizing (its ``clean`` modes).

    ``"whitespace"`` (BiomedCLIP's): ftfy's ``fix_text`` (mojibake such as ``cafÃ©``), HTML entities unescaped
    twice, ends stripped, whitespace runs collapsed to one space; ``"lower"`` also lowercases; ``"none"``
    leaves the text as it is.

    Example:
        >>> clean_report("  Heart  size &gt; normal.  ")
        'Heart size > normal.'
    """
    if clean == "none":
        return text
    if clean not in CLEAN_MODES:
        raise ValueError(f"clean must be one of {CLEAN_MODES}, got {clean!r}")
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    text = " ".join(text.split())
    return text.lower() if clean == "lower" else text


class CxrMtClipProcessor(ProcessorMixin):
    """Image processor + tokenizer -> `pixel_values`, `input_ids`, `attention_mask` (and `labels`).

    Args:
        image_processor: a `CxrMtClipImageProcessor` (default: BiomedCLIP's 224 px transform).
        tokenizer: the BERT tokenizer of the text tower.
        max_length: reports are truncated to this many tokens (the text tower's context length).
        clean: how reports are cleaned before tokenizing (`clean_report`; open_clip's default ``"whitespace"``).

    Example:
        >>> processor = CxrMtClipProcessor.from_pretrained("path/to/saved")  # doctest: +SKIP
        >>> batch = processor(images=[img], text=["No acute disease."], return_tensors="pt")  # doctest: +SKIP
    """

    def __init__(
        self,
        image_processor: CxrMtClipImageProcessor | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int = 256,
        clean: str = "whitespace",
        **kwargs: Any,
    ) -> None:
        if tokenizer is None:
            raise ValueError("CxrMtClipProcessor needs a tokenizer (e.g. AutoTokenizer.from_pretrained(folder))")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"CxrMtClipProcessor.max_length must be a positive int, got {max_length!r}")
        if clean not in CLEAN_MODES:
            raise ValueError(f"CxrMtClipProcessor.clean must be one of {CLEAN_MODES}, got {clean!r}")
        super().__init__(image_processor if image_processor is not None else CxrMtClipImageProcessor(), tokenizer,
                         **kwargs)
        self.max_length = max_length
        self.clean = clean

    # Read-only views of the image processor's settings (stored there only).
    @property
    def image_size(self) -> int:
        return int(self.image_processor.crop_size["height"])

    @property
    def image_mean(self) -> list[float]:
        return list(self.image_processor.image_mean)

    @property
    def image_std(self) -> list[float]:
        return list(self.image_processor.image_std)

    @classmethod
    def from_config(
        cls, config: CxrMtClipConfig, tokenizer: PreTrainedTokenizerBase | str | os.PathLike
    ) -> "CxrMtClipProcessor":
        """A processor for `config`: its image size and context length, the normalisation of its registered
        architecture (`cxr_mtclip.registry`; OpenAI CLIP's otherwise), `tokenizer` (an object or a folder)."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        arch = get_architecture(config.backbone) if is_registered(config.backbone) else None
        mean, std = (arch.image_mean, arch.image_std) if arch is not None else (CLIP_MEAN, CLIP_STD)
        image_processor = CxrMtClipImageProcessor(size=config.image_size, image_mean=mean, image_std=std)
        return cls(image_processor, tokenizer, max_length=config.context_length)

    @classmethod
    def from_backbone(
        cls, name_or_path: str | os.PathLike = BIOMEDCLIP_HUB_ID, *, cache_dir: str | os.PathLike | None = None
    ) -> "CxrMtClipProcessor":
        """The processor of an open_clip backbone (hub id or local folder holding `open_clip_config.json`).

        Reads only the config and the tokenizer files (the backbone repo's own, else its ``hf_tokenizer_name``
        repo's), never the weights; `cache_dir` is the huggingface_hub cache (default ``HF_HUB_CACHE``).
        """
        from .backbone import backbone_processor_config

        config = backbone_processor_config(name_or_path, cache_dir=cache_dir)
        if config.tokenizer_folder is not None:
            tokenizer = AutoTokenizer.from_pretrained(str(config.tokenizer_folder))
        elif config.tokenizer_name:
            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name,
                                                      cache_dir=str(cache_dir) if cache_dir is not None else None)
        else:
            raise ValueError(
                f"{name_or_path}: open_clip config names no hf_tokenizer_name and the backbone has no tokenizer files"
            )
        return cls(
            CxrMtClipImageProcessor(config.image_size, image_mean=config.image_mean, image_std=config.image_std),
            tokenizer,
            max_length=config.context_length,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "CxrMtClipProcessor":
        """Load a processor saved with `save_pretrained` (a local folder or a Hub repo id), old layout included.

        Raises FileNotFoundError naming ``processor_config.json`` when it is missing and ValueError naming it when
        it is not JSON or has fields this class does not know.
        """
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir():
            config_file = folder / kwargs.get("subfolder", "") / PROCESSOR_CONFIG_NAME
        else:
            from huggingface_hub import hf_hub_download

            hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "subfolder") if kwargs.get(k) is not None}
            config_file = Path(hf_hub_download(str(pretrained_model_name_or_path), PROCESSOR_CONFIG_NAME, **hub))
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: missing; not a folder written by CxrMtClipProcessor.save_pretrained")
        params = read_json(config_file)
        if not isinstance(params, dict):
            raise ValueError(f"{config_file}: expected a JSON object, got {type(params).__name__}")
        if "image_processor" not in params and set(params) & (_LEGACY_FIELDS - {"max_length", "processor_class"}):
            return cls._from_legacy(config_file, params)
        unknown = set(params) - _FIELDS
        if unknown:
            raise ValueError(f"{config_file}: unknown field(s) {sorted(unknown)}; expected {sorted(_FIELDS)}")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_legacy(cls, config_file: Path, params: dict[str, Any]) -> "CxrMtClipProcessor":
        """A processor from the flat processor_config.json of folders saved before the image processor existed."""
        unknown = set(params) - _LEGACY_FIELDS
        if unknown:
            raise ValueError(f"{config_file}: unknown field(s) {sorted(unknown)}; expected {sorted(_LEGACY_FIELDS)}")
        image_processor = CxrMtClipImageProcessor(
            size=params.get("image_size", 224), image_mean=params.get("image_mean", CLIP_MEAN),
            image_std=params.get("image_std", CLIP_STD),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(config_file.parent))
        return cls(image_processor, tokenizer, max_length=int(params.get("max_length", 256)))

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Write the tokenizer files and `processor_config.json` (atomically, that file last) into `save_directory`."""
        if kwargs.get("push_to_hub"):
            return super().save_pretrained(save_directory, **kwargs)
        # each file lands by rename, processor_config.json last: a folder that has it is complete
        with atomic_update_directory(save_directory, last=(PROCESSOR_CONFIG_NAME,)) as tmp:
            super().save_pretrained(str(tmp), **kwargs)
        return [str(Path(save_directory) / PROCESSOR_CONFIG_NAME)]

    def process_images(self, images: Image.Image | Iterable[Image.Image]) -> torch.Tensor:
        """Images -> a (n, 3, h, w) float32 tensor; ValueError naming the image that is empty or corrupt."""
        return self.image_processor(images)["pixel_values"]

    def process_text(self, text: str | Sequence[str]) -> BatchEncoding:
        """Reports -> `input_ids` and `attention_mask`, cleaned, padded to the longest, truncated to `max_length`."""
        texts = [clean_report(report, self.clean) for report in report_list(text)]
        return self.tokenizer(
            texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt",
            return_token_type_ids=False,
        )

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        text: str | Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        return_tensors: str = "pt",
        **kwargs: Any,
    ) -> BatchEncoding:
        if kwargs:
            raise ValueError(f"CxrMtClipProcessor got unknown argument(s) {sorted(kwargs)}")
        return model_inputs(self, images, text, labels, return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask"]


def model_inputs(processor: Any, images: Any, text: Any, labels: Any, return_tensors: str) -> BatchEncoding:
    """The body of a processor call: ``processor.process_text`` / ``process_images`` on what is given, plus labels.

    Shared by `CxrMtClipProcessor` and the CLIP baseline's processor (`cxr_mtclip.recipes.clip_baseline`).
    """
    name = type(processor).__name__
    if images is None and text is None:
        raise ValueError(f"{name} needs images, text, or both")
    if return_tensors != "pt":
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
    data: dict[str, torch.Tensor] = {}
    if text is not None:
        data.update(processor.process_text(text))
    if images is not None:
        data["pixel_values"] = processor.process_images(images)
    if labels is not None:
        data["labels"] = torch.as_tensor(list(labels), dtype=torch.long)
    return BatchEncoding(data)


def build_wordpiece_tokenizer(texts: Iterable[str], save_directory: str | os.PathLike, vocab_size: int = 2000) -> PreTrainedTokenizerBase:
    """Train a small uncased BERT WordPiece tokenizer on `texts` (offline) and save it; for tiny/demo models.

    The folder is replaced as a whole, so files of an earlier tokenizer never shadow the new vocabulary. The
    vocabulary is a function of `texts` and `vocab_size` only (the same in every process).
    """
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    texts = [str(t) for t in texts]
    if not any(t.strip() for t in texts):
        raise ValueError("build_wordpiece_tokenizer needs at least one non-empty text")
    trainer = BertWordPieceTokenizer(lowercase=True)
    # tokenizers numbers the "##x" continuation pieces in hash-map order, so ties between equally frequent merges
    # break differently in every process (huggingface/tokenizers#1794); listed first, the pieces get fixed ids and
    # the vocabulary depends on the texts alone
    pieces: set[str] = set()
    for text in texts:
        for word, _ in trainer.pre_tokenizer.pre_tokenize_str(trainer.normalizer.normalize_str(text)):
            pieces.update(word[1:])
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"##{c}" for c in sorted(pieces)]
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, show_progress=False,
                                special_tokens=specials)
    with atomic_directory(save_directory) as tmp:
        trainer.save_model(str(tmp))
        # from_pretrained reads vocab.txt in every transformers version (v5's constructor ignores vocab_file)
        tokenizer = BertTokenizerFast.from_pretrained(str(tmp), do_lower_case=True)
        tokenizer.save_pretrained(str(tmp))
    return BertTokenizerFast.from_pretrained(str(save_directory))
