"""CxrMtClipProcessor: BiomedCLIP's image transform and the BERT tokenizer, turning rows into model inputs."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from .atomic import atomic_update_directory
from .configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID, CLIP_MEAN, CLIP_STD, CxrMtClipConfig

PROCESSOR_CONFIG_NAME = "processor_config.json"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: 16-bit and float greys are min-max scaled, alpha is dropped onto black.

    Example:
        >>> to_rgb(Image.new("I;16", (4, 4))).mode
        'RGB'
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) / (high - low) * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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


def clean_report_text(text: str) -> str:
    """open_clip's text cleaning before tokenizing (`HFTokenizer`, clean='whitespace'): ftfy's `fix_text`, HTML
    unescaped twice, whitespace runs collapsed to one space, ends stripped.

    Example:
        >>> clean_report_text("Heart size  normal &gt; 2 cm. ")
        'Heart size normal > 2 cm.'
    """
    import ftfy

    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


class CxrMtClipImageTransform:
    """Resize the short side (bicubic), centre-crop to a square, scale to [0, 1], normalise (open_clip's eval transform)."""

    def __init__(self, image_size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {image_size}")
        self.image_size = int(image_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise ValueError(f"expected a PIL.Image, got {type(image).__name__}")
        if image.width == 0 or image.height == 0:
            raise ValueError("image is empty (0 pixels wide or high)")
        try:
            # PIL decodes lazily: a truncated or corrupt file fails here, on first access to its pixels
            image = to_rgb(image)
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            where = getattr(image, "filename", "") or "image"
            raise ValueError(f"{where}: cannot decode the pixels, the file is truncated or corrupt ({err})") from err
        size = self.image_size
        # torchvision's Resize(size) (open_clip's eval transform): the long side is truncated, not rounded
        short, long = sorted((image.width, image.height))
        new_long = int(size * long / short)
        new_w, new_h = (size, new_long) if image.width <= image.height else (new_long, size)
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
        return (tensor - self.mean) / self.std


class CxrMtClipProcessor:
    """Image transform + tokenizer -> `pixel_values`, `input_ids`, `attention_mask` (and `labels`).

    Text is padded to the longest report of the batch and truncated to `max_length` (BiomedCLIP: 256).

    Example:
        >>> processor = CxrMtClipProcessor.from_pretrained("path/to/saved")  # doctest: +SKIP
        >>> batch = processor(images=[img], text=["No acute disease."], return_tensors="pt")  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_size: int = 224,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        max_length: int = 256,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.max_length = int(max_length)
        self.image_transform = CxrMtClipImageTransform(image_size, image_mean, image_std)

    @classmethod
    def from_config(cls, config: CxrMtClipConfig, tokenizer: PreTrainedTokenizerBase | str | os.PathLike) -> "CxrMtClipProcessor":
        """A processor whose image size, normalisation and context length follow `config`."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        return cls(tokenizer, config.image_size, config.image_mean, config.image_std, config.context_length)

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
            raise ValueError(f"{name_or_path}: open_clip config names no hf_tokenizer_name and the backbone has no tokenizer files")
        return cls(tokenizer, config.image_size, config.image_mean, config.image_std, config.context_length)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> "CxrMtClipProcessor":
        """Load a processor saved with `save_pretrained` (a local folder or a Hub repo id)."""
        folder = Path(str(path))
        if folder.is_dir():
            config_file = folder / PROCESSOR_CONFIG_NAME
        else:
            from huggingface_hub import hf_hub_download

            config_file = Path(hf_hub_download(str(path), PROCESSOR_CONFIG_NAME, **kwargs))
            folder = config_file.parent
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: missing; not a folder written by CxrMtClipProcessor.save_pretrained")
        try:
            params = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_file}: not valid JSON ({err})") from err
        expected = {"image_size", "image_mean", "image_std", "max_length", "processor_class"}
        unknown = set(params) - expected
        if unknown:
            raise ValueError(f"{config_file}: unknown field(s) {sorted(unknown)}; expected {sorted(expected)}")
        params.pop("processor_class", None)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return cls(tokenizer, **params)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the tokenizer files and `processor_config.json` (atomically) into `save_directory`."""
        params = {
            "processor_class": type(self).__name__,
            "image_size": self.image_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "max_length": self.max_length,
        }
        # each file lands by rename, processor_config.json last: a folder that has it is complete
        with atomic_update_directory(save_directory, last=(PROCESSOR_CONFIG_NAME,)) as tmp:
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / PROCESSOR_CONFIG_NAME).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")

    def process_images(self, images: Iterable[Image.Image]) -> torch.Tensor:
        tensors = []
        for i, image in enumerate(images):
            try:
                tensors.append(self.image_transform(image))
            except ValueError as err:
                raise ValueError(f"image {i}: {err}") from err
        if not tensors:
            raise ValueError("no images given")
        return torch.stack(tensors)

    def process_text(self, text: str | Sequence[str]) -> BatchEncoding:
        texts = [clean_report_text(t) for t in report_list(text)]
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
    ) -> BatchEncoding:
        if images is None and text is None:
            raise ValueError("CxrMtClipProcessor needs images, text, or both")
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; use 'pt'")
        data: dict[str, torch.Tensor] = {}
        if text is not None:
            data.update(self.process_text(text))
        if images is not None:
            batch = [images] if isinstance(images, Image.Image) else list(images)
            data["pixel_values"] = self.process_images(batch)
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

    from .atomic import atomic_directory

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
