"""cxr_mtclip: BiomedCLIP fine-tuned with a multi-task loss for chest X-ray image <-> report retrieval.

The model's files (configuration, modeling, processing, image processing) sit here, the rest in one sub-package
per concept: `data`, `training`, `retrieval`, `evaluation`, `recipes` (docs/architecture.md). Importing the
package registers the model, config, processor and image processor with transformers' Auto classes
(`register_auto_classes`); every public name is loaded on first use.
"""

import os
import sys

__version__ = "0.1.0"

# Every public name loads on first use (`from cxr_mtclip import CxrMtClipTrainer` imports the Trainer only then).
_LAZY = {
    "BIOMEDCLIP_HUB_ID": "configuration_cxr_mtclip",
    "CxrMtClipConfig": "configuration_cxr_mtclip",
    "CxrMtClipImageProcessor": "image_processing_cxr_mtclip",
    "PAPER_LOSS_WEIGHTS": "losses",
    "CompositeLoss": "losses",
    "CompositeLossOutput": "losses",
    "clip_loss": "losses",
    "supervised_contrastive_loss": "losses",
    "CxrMtClipModel": "modeling_cxr_mtclip",
    "CxrMtClipOutput": "modeling_cxr_mtclip",
    "CxrMtClipPreTrainedModel": "modeling_cxr_mtclip",
    "fuse_embeddings": "modeling_cxr_mtclip",
    "CxrMtClipProcessor": "processing_cxr_mtclip",
    "build_wordpiece_tokenizer": "processing_cxr_mtclip",
    "list_configs": "registry",
    "register_config": "registry",
    "CxrMtClipTrainer": "training",
    "CxrMtClipTrainingArguments": "training",
    "CxrMtClipDataCollator": "training",
    "load_openi": "data",
    "split_openi": "data",
    "make_phantom_openi": "data",
    "build_openi_dataset": "data",
    "OPENI_FEATURES": "data",
    "open_image": "data.images",
    "embed_dataset": "retrieval",
    "build_index": "retrieval",
    "RetrievalIndex": "retrieval",
    "search_by_image": "retrieval",
    "search_by_text": "retrieval",
    "search_similar_studies": "retrieval",
    "save_faiss_index": "retrieval",
    "load_faiss_index": "retrieval",
    "retrieval_metrics": "evaluation",
    "bidirectional_retrieval_metrics": "evaluation",
    "classification_metrics": "evaluation",
    "evaluate_models": "evaluation.evaluate",
    "load_model_and_processor": "hub",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cxr_mtclip' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def register_auto_classes() -> None:
    """Register the config, model, processor and image processor with transformers' Auto classes (idempotent).

    Importing the package does it, except in the `cxr-mtclip` command, which calls it when a subcommand starts
    (so that ``cxr-mtclip --help`` does not wait for torch and transformers).
    """
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

    from .configuration_cxr_mtclip import CxrMtClipConfig
    from .image_processing_cxr_mtclip import CxrMtClipImageProcessor
    from .modeling_cxr_mtclip import CxrMtClipModel
    from .processing_cxr_mtclip import CxrMtClipProcessor

    AutoConfig.register(CxrMtClipConfig.model_type, CxrMtClipConfig, exist_ok=True)
    AutoModel.register(CxrMtClipConfig, CxrMtClipModel, exist_ok=True)
    # one PIL-based class serves whichever backend transformers asks for
    AutoImageProcessor.register(
        CxrMtClipConfig, image_processor_classes={"pil": CxrMtClipImageProcessor, "torchvision": CxrMtClipImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(CxrMtClipConfig, CxrMtClipProcessor, exist_ok=True)


ENTRY_POINT_ENV = "CXR_MTCLIP_ENTRY_POINT"
"""Set to ``1`` by the project's scripts that run through the command's runner (dataset_scripts/build_openi.py,
examples/train.py) before they import the package: the runner registers the Auto classes when a model loads, so
their ``--help`` answers without loading torch and transformers."""


def _started_as_the_cli() -> bool:
    """Whether this process is the `cxr-mtclip` command (console script, ``python -m cxr_mtclip.cli``, or a script
    of the project that runs through it and says so in `ENTRY_POINT_ENV`)."""
    command = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    argv = list(getattr(sys, "orig_argv", []))
    launched_as_module = any(argv[i : i + 2] == ["-m", "cxr_mtclip.cli"] for i in range(len(argv) - 1))
    return command in ("cxr-mtclip", "cxr-mtclip.exe") or launched_as_module or os.environ.get(ENTRY_POINT_ENV) == "1"


if not _started_as_the_cli():
    register_auto_classes()

__all__ = [*_LAZY, "register_auto_classes"]
