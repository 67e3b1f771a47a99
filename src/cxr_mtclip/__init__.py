"""cxr_mtclip: BiomedCLIP fine-tuned with a multi-task loss for chest X-ray image <-> report retrieval."""

from transformers import AutoConfig, AutoModel

from .configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID, CxrMtClipConfig
from .losses import CompositeLoss, CompositeLossOutput, clip_loss, supervised_contrastive_loss
from .modeling_cxr_mtclip import CxrMtClipModel, CxrMtClipOutput, CxrMtClipPreTrainedModel, fuse_embeddings
from .processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer

__version__ = "0.1.0"

AutoConfig.register(CxrMtClipConfig.model_type, CxrMtClipConfig, exist_ok=True)
AutoModel.register(CxrMtClipConfig, CxrMtClipModel, exist_ok=True)

__all__ = [
    "BIOMEDCLIP_HUB_ID",
    "CompositeLoss",
    "CompositeLossOutput",
    "CxrMtClipConfig",
    "CxrMtClipModel",
    "CxrMtClipOutput",
    "CxrMtClipPreTrainedModel",
    "CxrMtClipProcessor",
    "build_wordpiece_tokenizer",
    "clip_loss",
    "supervised_contrastive_loss",
    "fuse_embeddings",
]
