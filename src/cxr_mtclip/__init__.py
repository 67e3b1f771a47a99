"""cxr_mtclip: BiomedCLIP fine-tuned with a multi-task loss for chest X-ray image <-> report retrieval.

The model's files (configuration, modeling, processing, image processing) sit here, the rest in one sub-package
per concept: `data`, `training`, `retrieval`, `evaluation`, `recipes` (docs/architecture.md). Importing the
package registers the model, config, processor and image processor with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID, CxrMtClipConfig
from .image_processing_cxr_mtclip import CxrMtClipImageProcessor
from .losses import PAPER_LOSS_WEIGHTS, CompositeLoss, CompositeLossOutput, clip_loss, supervised_contrastive_loss
from .modeling_cxr_mtclip import CxrMtClipModel, CxrMtClipOutput, CxrMtClipPreTrainedModel, fuse_embeddings
from .processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
from .registry import list_configs, register_config

__version__ = "0.1.0"

# Heavier parts load on first use: `from cxr_mtclip import CxrMtClipTrainer` imports the Trainer only then.
_LAZY = {
    "CxrMtClipTrainer": "training",
    "CxrMtClipTrainingArguments": "training",
    "CxrMtClipDataCollator": "training",
    "load_openi": "data",
    "split_openi": "data",
    "make_phantom_openi": "data",
    "build_openi_dataset": "data",
    "OPENI_FEATURES": "data",
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

    return getattr(importlib.import_module(f".{module}", __name__), name)


AutoConfig.register(CxrMtClipConfig.model_type, CxrMtClipConfig, exist_ok=True)
AutoModel.register(CxrMtClipConfig, CxrMtClipModel, exist_ok=True)
# one PIL-based class serves whichever backend transformers asks for
AutoImageProcessor.register(
    CxrMtClipConfig, image_processor_classes={"pil": CxrMtClipImageProcessor, "torchvision": CxrMtClipImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(CxrMtClipConfig, CxrMtClipProcessor, exist_ok=True)

__all__ = [*_LAZY,
    "BIOMEDCLIP_HUB_ID",
    "PAPER_LOSS_WEIGHTS",
    "CompositeLoss",
    "CompositeLossOutput",
    "CxrMtClipConfig",
    "CxrMtClipImageProcessor",
    "CxrMtClipModel",
    "CxrMtClipOutput",
    "CxrMtClipPreTrainedModel",
    "CxrMtClipProcessor",
    "build_wordpiece_tokenizer",
    "clip_loss",
    "fuse_embeddings",
    "list_configs",
    "register_config",
    "supervised_contrastive_loss",
]
