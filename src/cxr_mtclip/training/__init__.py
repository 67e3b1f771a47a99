"""Fine-tuning with transformers' Trainer: arguments, collator, trainer, loss-weight search, frozen-trunk cache.

- `training_args`: `CxrMtClipTrainingArguments` (the paper's recipe as defaults).
- `collator`: `CxrMtClipDataCollator` (rows -> tensors through the processor).
- `trainer`: `CxrMtClipTrainer`, `parameter_groups`, `compute_retrieval_metrics`, `build_model`, `make_model_init`.
- `hpo`: the search space, objective and trial tables of the loss-weight search.
- `feature_cache`, `cached_model`: run the frozen blocks once, train the rest from disk.

The whole training run (arguments from the command line, data, HPO, results, model card) is a recipe:
`cxr_mtclip.recipes.train.run_training`, behind ``examples/train.py`` and ``cxr-mtclip train``.
"""

from .cached_model import CachedCxrMtClipModel, prepare_cached_training
from .collator import CxrMtClipDataCollator
from .feature_cache import CachedFeatureCollator, FeatureCache, build_feature_cache, load_or_build_feature_cache
from .hpo import HP_SEARCH_RANGES, default_hp_space, default_objective
from .trainer import (
    CONFIG_OVERRIDE_KEYS,
    CxrMtClipTrainer,
    LogitScaleClampCallback,
    build_model,
    compute_retrieval_metrics,
    make_model_init,
    parameter_groups,
)
from .training_args import MEAN_ACCURACY_KEY, CxrMtClipTrainingArguments

__all__ = [
    "CONFIG_OVERRIDE_KEYS",
    "HP_SEARCH_RANGES",
    "MEAN_ACCURACY_KEY",
    "CachedCxrMtClipModel",
    "CachedFeatureCollator",
    "CxrMtClipDataCollator",
    "CxrMtClipTrainer",
    "CxrMtClipTrainingArguments",
    "FeatureCache",
    "LogitScaleClampCallback",
    "build_feature_cache",
    "build_model",
    "compute_retrieval_metrics",
    "default_hp_space",
    "default_objective",
    "load_or_build_feature_cache",
    "make_model_init",
    "parameter_groups",
    "prepare_cached_training",
]
