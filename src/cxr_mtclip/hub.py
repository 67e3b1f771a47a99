"""Models in and out: one `load_model_and_processor` for every spec, and the upload of a trained folder to the Hub.

Specs understood by `load_model_and_processor` (and so by ``cxr-mtclip evaluate --model NAME=SPEC``):

* a folder written by ``save_pretrained`` (the processor beside the model, or in ``<folder>/processor``);
* a registered architecture (`cxr_mtclip.registry`): ``biomedclip`` loads its open_clip weights (the zero-shot
  model); one without weights (``tiny``, ``demo``) gets random weights drawn from `seed` and a tokenizer given
  or trained on `tokenizer_texts`;
* anything else: an open_clip backbone (local folder or ``hf-hub:`` id): the zero-shot model, untrained head.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi

from .model_card import MODEL_CARD_NAME
from .modeling_cxr_mtclip import CxrMtClipModel
from .processing_cxr_mtclip import PROCESSOR_CONFIG_NAME, CxrMtClipProcessor, build_wordpiece_tokenizer
from .registry import get_architecture, is_registered

__all__ = ["load_model_and_processor", "push_to_hub", "upload_plan"]

# What a trained output_dir uploads: required files, then optional ones (path in repo = file name).
MODEL_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = ("processor_config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json")
OPTIONAL_FILES = (
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "trainer_state.json",
    "loss_curves.png",
    "hpo_trials.csv",
    "hpo_trials.json",
    "best_hyperparameters.json",
)


def load_model_and_processor(
    spec: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    tokenizer_texts: Iterable[str] | None = None,
    work_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[CxrMtClipModel, CxrMtClipProcessor]:
    """`(model, processor)` in eval mode from a spec (see the module docstring).

    Args:
        tokenizer: a tokenizer folder, for a saved model without a processor or a randomly initialised architecture.
        tokenizer_texts, work_dir: a randomly initialised architecture without `tokenizer`: texts to train a
            WordPiece tokenizer on, saved under `work_dir`.
        seed: the random weights of a randomly initialised architecture.
        cache_dir: the huggingface_hub cache for an open_clip backbone (default ``HF_HUB_CACHE``).

    Raises FileNotFoundError naming the folder when a saved model has no processor and no `tokenizer` is given.

    Example:
        >>> model, processor = load_model_and_processor("runs/openi")  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    name = str(spec)
    folder = Path(name).expanduser()
    arch = get_architecture(name) if is_registered(name) and not folder.exists() else None
    if arch is not None and arch.pretrained is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CxrMtClipModel.from_registry(name, dropout=0.0)
        if tokenizer is None:
            texts = [t for t in (tokenizer_texts or []) if isinstance(t, str) and t.strip()]
            if not texts or work_dir is None:
                raise ValueError(f"model {name!r} needs a tokenizer folder, or tokenizer_texts and a work_dir to train one in")
            tokenizer = build_wordpiece_tokenizer(texts, Path(work_dir) / f"{name}_tokenizer",
                                                  vocab_size=int(model.config.text_config_dict["vocab_size"]))
        processor = CxrMtClipProcessor.from_config(model.config, tokenizer)
    elif arch is not None:
        model = CxrMtClipModel.from_registry(name, cache_dir=cache_dir)
        processor = CxrMtClipProcessor.from_backbone(arch.pretrained, cache_dir=cache_dir)
    elif (folder / "config.json").is_file():
        model = CxrMtClipModel.from_pretrained(str(folder))
        processor_dir = next((d for d in (folder, folder / "processor") if (d / PROCESSOR_CONFIG_NAME).is_file()), None)
        if processor_dir is not None:
            processor = CxrMtClipProcessor.from_pretrained(processor_dir)
        elif tokenizer is not None:
            processor = CxrMtClipProcessor.from_config(model.config, AutoTokenizer.from_pretrained(str(tokenizer)))
        else:
            raise FileNotFoundError(
                f"{folder}: no {PROCESSOR_CONFIG_NAME} beside the model or in {folder / 'processor'}; "
                "save the processor with the model or pass a tokenizer folder"
            )
    else:
        model = CxrMtClipModel.from_backbone(name, cache_dir=cache_dir)
        processor = CxrMtClipProcessor.from_backbone(name, cache_dir=cache_dir)
    if device is not None:
        model.to(device)
    return model.eval(), processor


def upload_plan(output_dir: str | os.PathLike) -> dict[str, Path]:
    """Path in the Hub repo -> local file, for a trained `output_dir`: model, processor, card (as README.md), results.

    Checkpoints, `training_args.bin` (a pickle) and the tiny-model `tokenizer/` folder are not uploaded.
    Raises FileNotFoundError naming the first required file that is missing.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: output folder not found")
    plan: dict[str, Path] = {}
    for name in MODEL_FILES + PROCESSOR_FILES + (MODEL_CARD_NAME,):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; expected a folder written by run_training")
    weights = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise FileNotFoundError(f"{folder}: no model weights; expected one of {list(WEIGHT_FILES)}")
    for name in MODEL_FILES + PROCESSOR_FILES + tuple(weights):
        plan[name] = folder / name
    if "model.safetensors.index.json" in weights:
        for shard in sorted(folder.glob("model-*-of-*.safetensors")):
            plan[shard.name] = shard
    tokenizer = [name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not tokenizer:
        raise FileNotFoundError(f"{folder}: no tokenizer files; expected some of {list(TOKENIZER_FILES)}")
    for name in tokenizer + [n for n in OPTIONAL_FILES if (folder / n).is_file()]:
        plan[name] = folder / name
    plan["README.md"] = folder / MODEL_CARD_NAME
    return plan


def push_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = True,
    revision: str | None = None,
    commit_message: str = "Upload cxr_mtclip model, processor, model card and results",
    api: HfApi | None = None,
) -> list[str]:
    """Create `repo_id` if needed and upload :func:`upload_plan` in one commit; returns the paths in the repo.

    Example:
        >>> push_to_hub("runs/openi", "me/cxr-mtclip-openi")  # doctest: +SKIP
    """
    if not repo_id or repo_id.count("/") > 1:
        raise ValueError(f"repo_id must look like 'name' or 'user/name', got {repo_id!r}")
    plan = upload_plan(output_dir)
    api = api or HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local)) for path, local in sorted(plan.items())]
    api.create_commit(
        repo_id=repo_id, repo_type="model", operations=operations, commit_message=commit_message, revision=revision
    )
    return sorted(plan)
