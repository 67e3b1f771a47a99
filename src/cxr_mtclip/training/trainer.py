"""CxrMtClipTrainer: transformers' Trainer (under Accelerate) with the paper's two learning rates, per-term loss
logging, retrieval evaluation and the loss-weight search; `build_model` / `make_model_init` build its models.

The paper's recipe (arXiv 2601.05399): AdamW, backbone learning rate 1e-5, head learning rate 1e-4,
10 % linear warm-up then cosine decay, 20 epochs, batch 128 (`CxrMtClipTrainingArguments`), loss
``bce_weight * BCE + supcon_weight * SupCon + clip_weight * CLIP``.

Global-batch negatives: with N processes the model's :class:`~cxr_mtclip.losses.CompositeLoss`
gathers logits, labels and embeddings from every process (``CxrMtClipConfig.gather_distributed``,
overridable with ``CxrMtClipTrainingArguments.gather_distributed``), so the loss over N x B
examples equals the single-process loss over the same examples. Launch:
``accelerate launch --multi_gpu --num_processes N examples/train.py ...``; on a machine without GPUs
accelerate 1.x only starts N processes with ``--multi_gpu`` (``--cpu`` starts one), and
:class:`CxrMtClipTrainingArguments` then switches ``use_cpu`` on so that they join one gloo group.
The search of the loss weights is described in `cxr_mtclip.training.hpo`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import get_parameter_names
from transformers.trainer_utils import BestRun, number_of_arguments

from ..configuration_cxr_mtclip import CxrMtClipConfig
from ..evaluation.metrics import bidirectional_retrieval_metrics, classification_metrics
from ..losses import LOSS_TERMS, MULTILABEL_LOSS_TERMS
from ..modeling_cxr_mtclip import CxrMtClipModel
from ..processing_cxr_mtclip import CxrMtClipProcessor
from ..registry import is_registered
from ..utils import json_safe
from .collator import CxrMtClipDataCollator
from .findings import apply_finding_class_weights, check_finding_data, finding_eval_metrics
from .hpo import default_hp_space, default_objective, trial_params
from .training_args import MEAN_ACCURACY_KEY, CxrMtClipTrainingArguments, protocol_key

__all__ = [
    "CONFIG_OVERRIDE_KEYS",
    "CxrMtClipTrainer",
    "LogitScaleClampCallback",
    "build_model",
    "compute_retrieval_metrics",
    "is_head_parameter",
    "make_model_init",
    "parameter_groups",
    "refuse_data_parallel",
]

CONFIG_OVERRIDE_KEYS = (
    "bce_weight",
    "supcon_weight",
    "clip_weight",
    "supcon_temperature",
    "dropout",
    "trainable_image_blocks",
    "trainable_text_blocks",
    "gather_distributed",
    "train_logit_scale",
    # multi-label findings (beyond the paper; CxrMtClipConfig documents them)
    "finding_names",
    "finding_bce_weight",
    "multilabel_supcon_weight",
    "multilabel_supcon_temperature",
    "multilabel_supcon_include_label",
    "finding_class_balance",
    "finding_class_balance_beta",
)
_HEAD_PARAMETER_NAMES = ("backbone.logit_scale",)
_HEAD_PARAMETER_PREFIXES = ("classifier.", "finding_classifier.")


# ----------------------------------------------------------------------------------------------
# Optimiser parameter groups
# ----------------------------------------------------------------------------------------------


def is_head_parameter(name: str) -> bool:
    """Whether a parameter trains at `head_learning_rate`: the classifier and the CLIP logit scale (when it trains)."""
    name = name.removeprefix("module.")
    return name in _HEAD_PARAMETER_NAMES or name.startswith(_HEAD_PARAMETER_PREFIXES)


def _no_decay_names(model: nn.Module) -> set[str]:
    # transformers' rule (LayerNorm modules, names with bias/norm) plus every tensor of rank < 2
    # (norm weights, biases, the logit scale), as open_clip does.
    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decay = set(get_parameter_names(model, [nn.LayerNorm], patterns))
    return {name for name, p in model.named_parameters() if name not in decay or p.ndim < 2}


def parameter_groups(
    model: nn.Module, learning_rate: float, head_learning_rate: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups: backbone vs head (classifier + logit scale), each with/without weight decay.

    Only trainable parameters are included; empty groups are dropped. Each group carries a `name`
    (`backbone`, `backbone_no_decay`, `head`, `head_no_decay`).

    Example:
        >>> groups = parameter_groups(CxrMtClipModel(CxrMtClipConfig.tiny()), 1e-5, 1e-4, 0.01)
        >>> [(g["name"], g["lr"]) for g in groups][-1]
        ('head_no_decay', 0.0001)
    """
    no_decay = _no_decay_names(model)
    buckets: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_no_decay": [], "head": [], "head_no_decay": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = "head" if is_head_parameter(name) else "backbone"
        buckets[key + ("_no_decay" if name in no_decay else "")].append(param)
    groups = []
    for key, params in buckets.items():
        if not params:
            continue
        groups.append(
            {
                "name": key,
                "params": params,
                "lr": head_learning_rate if key.startswith("head") else learning_rate,
                "weight_decay": 0.0 if key.endswith("no_decay") else weight_decay,
            }
        )
    return groups


# ----------------------------------------------------------------------------------------------
# Evaluation metrics
# ----------------------------------------------------------------------------------------------


def compute_retrieval_metrics(eval_pred: EvalPrediction, ks: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """Image->text and text->image retrieval metrics, the head's classification metrics and the mean accuracy@1.

    `eval_pred.predictions` is `(logits, image_embeds, text_embeds)` as returned by
    `CxrMtClipTrainer.prediction_step`; cut-offs larger than the split are dropped. Retrieval keys name their
    protocol (`protocol_key`): ``cross-modal/image_to_text/accuracy@1``, ...; ``classification/...`` keys are the
    head's.
    """
    predictions = eval_pred.predictions
    if not isinstance(predictions, (tuple, list)) or len(predictions) not in (3, 4):
        raise ValueError("expected predictions (logits, image_embeds, text_embeds[, finding_logits]) from "
                         "CxrMtClipTrainer.prediction_step")
    logits, image_embeds, text_embeds = (np.asarray(p, dtype=np.float64) for p in predictions[:3])
    label_ids = eval_pred.label_ids
    findings = tuple(label_ids[1:]) if isinstance(label_ids, (tuple, list)) else None
    labels = np.asarray(label_ids[0] if findings is not None else label_ids).reshape(-1)
    n = image_embeds.shape[0]
    usable = tuple(k for k in ks if k <= n) or (1,)
    metrics = bidirectional_retrieval_metrics(image_embeds, text_embeds, labels, ks=usable)
    metrics.update(classification_metrics(logits.reshape(-1), labels))
    if findings is not None:  # multi-label findings (beyond the paper): macro/micro averages and the head's AUC
        finding_logits = np.asarray(predictions[3], dtype=np.float64) if len(predictions) == 4 else None
        metrics.update(finding_eval_metrics(image_embeds, text_embeds, *findings, finding_logits, ks=usable))
    # Image queries rank the reports and back (cross-modal): every retrieval key names that protocol.
    metrics = {protocol_key(key): value for key, value in metrics.items()}
    metrics[MEAN_ACCURACY_KEY] = (metrics[protocol_key("image_to_text/accuracy@1")]
                                  + metrics[protocol_key("text_to_image/accuracy@1")]) / 2
    return metrics


# ----------------------------------------------------------------------------------------------
# Model construction
# ----------------------------------------------------------------------------------------------



def build_model(
    *,
    model_name_or_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    config: CxrMtClipConfig | None = None,
    cache_dir: str | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> CxrMtClipModel:
    """A CxrMtClipModel from a saved folder, a registered architecture (`cxr_mtclip.registry`: ``biomedclip``,
    ``tiny``, ...), an open_clip backbone (``hf-hub:`` id or folder) or a config.

    `overrides` set CxrMtClipConfig fields (loss weights, dropout, freeze policy) before the model is built;
    `seed` (when given) seeds the random initialisation of the head (and of a randomly initialised architecture).

    Example:
        >>> build_model(backbone="tiny", bce_weight=0.5).config.bce_weight
        0.5
    """
    unknown = set(overrides) - set(CONFIG_OVERRIDE_KEYS)
    if unknown:
        raise ValueError(f"cannot override CxrMtClipConfig field(s) {sorted(unknown)}; allowed: {list(CONFIG_OVERRIDE_KEYS)}")
    if seed is not None:
        set_seed(seed)
    if model_name_or_path is not None:
        loaded = CxrMtClipConfig.from_pretrained(str(model_name_or_path), cache_dir=cache_dir)
        for key, value in overrides.items():
            setattr(loaded, key, value)
        loaded.validate_fields()
        return CxrMtClipModel.from_pretrained(str(model_name_or_path), config=loaded, cache_dir=cache_dir)
    if config is not None:
        params = config.to_dict()
        params.update(overrides)
        for key in ("model_type", "transformers_version", "architectures"):
            params.pop(key, None)
        return CxrMtClipModel(CxrMtClipConfig(**params))
    if backbone is None:
        raise ValueError("build_model needs model_name_or_path, backbone or config")
    if is_registered(backbone):
        return CxrMtClipModel.from_registry(backbone, cache_dir=cache_dir, **overrides)
    return CxrMtClipModel.from_backbone(backbone, cache_dir=cache_dir, **overrides)


def make_model_init(
    *,
    model_name_or_path: str | os.PathLike | None = None,
    backbone: str | None = None,
    config: CxrMtClipConfig | None = None,
    cache_dir: str | None = None,
    hp_space: Callable[[Any], dict[str, Any]] | None = None,
    **overrides: Any,
) -> Callable[[Any], CxrMtClipModel]:
    """A Trainer `model_init(params)` that builds a fresh model; `params` override config fields.

    `params` is a dict, or an optuna trial whose values are drawn with `hp_space` (default
    :func:`default_hp_space`). Keys that are not CxrMtClipConfig overrides (e.g. `learning_rate`) are
    ignored here: CxrMtClipTrainer applies them to its TrainingArguments.

    Example:
        >>> init = make_model_init(backbone="tiny")
        >>> init({"clip_weight": 1.5, "learning_rate": 3e-5}).config.clip_weight
        1.5
    """

    def model_init(trial: Any = None) -> CxrMtClipModel:
        params = dict(overrides)
        params.update({k: v for k, v in trial_params(trial, hp_space).items() if k in CONFIG_OVERRIDE_KEYS})
        return build_model(
            model_name_or_path=model_name_or_path, backbone=backbone, config=config, cache_dir=cache_dir, **params
        )

    return model_init


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


class _TermMeter:
    """Weighted running sums of the loss terms, on device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.names: tuple[str, ...] = LOSS_TERMS  # the paper's terms, plus the multi-label ones a model switches on

    def add(self, values: Sequence[torch.Tensor], weight: float, names: Sequence[str] = LOSS_TERMS) -> None:
        if self.sums is not None and tuple(names) != self.names:
            raise ValueError(f"loss terms changed from {self.names} to {tuple(names)} between steps")
        self.names = tuple(names)
        stacked = torch.stack([v.detach().float().reshape(()) for v in values] + [values[0].new_tensor(1.0).float()])
        stacked = stacked * weight
        self.sums = stacked if self.sums is None else self.sums + stacked

    def pop(self, gather: Callable[[torch.Tensor], torch.Tensor], has_data: bool) -> dict[str, float]:
        # Every process calls pop at the same points; `has_data` must agree across processes.
        if not has_data:
            return {}
        sums = self.sums if self.sums is not None else torch.zeros(len(self.names) + 1)
        totals = gather(sums.reshape(1, -1)).reshape(-1, len(self.names) + 1).sum(dim=0)
        self.sums = None
        weight = float(totals[-1])
        if weight <= 0:
            return {}
        return {name: float(totals[i]) / weight for i, name in enumerate(self.names)}

    @property
    def has_data(self) -> bool:
        return self.sums is not None


class LogitScaleClampCallback(TrainerCallback):
    """After every optimiser step, clamp a trainable CLIP logit scale to [0, ln 100] (open_clip's bound).

    A frozen logit scale (the default, `CxrMtClipConfig.train_logit_scale=False`) is left untouched.
    """

    def on_optimizer_step(self, args: TrainingArguments, state: Any, control: Any, model: nn.Module | None = None,
                          **kwargs: Any) -> None:
        while isinstance(getattr(model, "module", None), nn.Module):  # DDP / accelerate wrappers
            model = model.module
        if model is not None and hasattr(model, "clamp_logit_scale") and model.backbone.logit_scale.requires_grad:
            model.clamp_logit_scale()


def refuse_data_parallel(n_gpu: int) -> None:
    """Raise ValueError when transformers would wrap the model in `nn.DataParallel` (one process, several GPUs).

    DataParallel splits each batch over replicas, so the contrastive negatives would come from each replica's
    slice only and the loss terms come back as one value per replica.
    """
    if n_gpu > 1:
        raise ValueError(
            f"CxrMtClipTrainer does not support nn.DataParallel (one process sees {n_gpu} GPUs): run "
            f"`accelerate launch --multi_gpu --num_processes {n_gpu} examples/train.py ...` (one process per GPU, "
            "global-batch negatives) or make one GPU visible with CUDA_VISIBLE_DEVICES=0"
        )


@contextlib.contextmanager
def _keep_last_batch(args: TrainingArguments) -> Iterator[None]:
    """`args.dataloader_drop_last` off inside the block (the loader built there keeps its last partial batch)."""
    drop_last = args.dataloader_drop_last
    args.dataloader_drop_last = False
    try:
        yield
    finally:
        args.dataloader_drop_last = drop_last


class CxrMtClipTrainer(Trainer):
    """Trainer with the paper's two learning rates, per-term loss logging and retrieval evaluation.

    - `create_optimizer`: :func:`parameter_groups` (backbone at `learning_rate`, classifier (+ the logit
      scale when `config.train_logit_scale`) at `head_learning_rate`, no decay on norms/biases/logit scale,
      trainable parameters only); :class:`LogitScaleClampCallback` clamps a trainable logit scale to
      [0, ln 100] after every optimiser step.
    - one process per device: transformers' `nn.DataParallel` path (one process, several GPUs) is refused
      with a ValueError pointing to `accelerate launch` (:func:`refuse_data_parallel`).
    - `compute_loss`: the model's composite loss; `bce_loss`, `supcon_loss`, `clip_loss` are logged as
      running means next to `loss` at every logging step and as `eval_bce_loss`... in evaluation.
    - evaluation: :func:`compute_retrieval_metrics` on the collected embeddings of every study (the eval and test
      loaders keep their last partial batch even with `dataloader_drop_last`), keys like
      `eval_cross-modal/image_to_text/accuracy@1` (the default `compute_metrics`).
    - `hyperparameter_search`: optuna, seeded TPE, :func:`default_hp_space`, :func:`default_objective`;
      config fields of each trial go to `model_init`, TrainingArguments fields to the arguments.

    Example:
        >>> trainer = CxrMtClipTrainer(model=model, args=args, processing_class=processor,
        ...                            train_dataset=splits["train"], eval_dataset=splits["validation"])  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: CxrMtClipModel | None = None,
        args: TrainingArguments | None = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: CxrMtClipProcessor | None = None,
        model_init: Callable[..., CxrMtClipModel] | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = CxrMtClipTrainingArguments(output_dir="trainer_output")
        if args.remove_unused_columns:
            raise ValueError("CxrMtClipTrainer needs remove_unused_columns=False (the collator reads image/report columns)")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("CxrMtClipTrainer needs a data_collator or a processing_class (CxrMtClipProcessor)")
            data_collator = CxrMtClipDataCollator(processing_class)
        self._meters = {"train": _TermMeter(), "train_total": _TermMeter(), "eval": _TermMeter()}
        self._model_hp_space: Callable[[Any], dict[str, Any]] | None = None
        self.hp_study: Any = None
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_retrieval_metrics if compute_metrics is None else compute_metrics,
            **kwargs,
        )
        refuse_data_parallel(self.args.n_gpu)
        self.add_callback(LogitScaleClampCallback())
        self._apply_loss_options(self.model)

    # -- model ------------------------------------------------------------------------------------

    def _apply_loss_options(self, model: nn.Module) -> None:
        self._apply_finding_options(model)
        # The config is the loss's one holder: the model builds its loss from it at every call.
        gather = getattr(self.args, "gather_distributed", None)
        config = getattr(model, "config", None)
        if gather is None or not isinstance(config, CxrMtClipConfig):
            return
        config.gather_distributed = bool(gather)

    def _apply_finding_options(self, model: nn.Module) -> None:
        """Multi-label findings (beyond the paper): the data fits the model's findings, class weights, collator order."""
        train, evaluation = getattr(self, "train_dataset", None), getattr(self, "eval_dataset", None)
        check_finding_data(model, [train, *(evaluation.values() if isinstance(evaluation, dict) else [evaluation])])
        apply_finding_class_weights(model, train)
        names = getattr(getattr(model, "config", None), "finding_names", None)
        collator = getattr(self, "data_collator", None)
        if names is not None and isinstance(collator, CxrMtClipDataCollator) and collator.finding_names is None:
            collator.finding_names = list(names)

    def _wrap_model(self, model: nn.Module, training: bool = True, dataloader: Any = None) -> nn.Module:
        refuse_data_parallel(self.args.n_gpu)  # args may have changed since __init__
        return super()._wrap_model(model, training=training, dataloader=dataloader)

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Build a model with `model_init`, passing the trial's hyper-parameters as a plain dict."""
        params = None if trial is None else trial_params(trial, self._model_hp_space)
        if self.model_init is None:
            raise RuntimeError("CxrMtClipTrainer.call_model_init needs a model_init")
        if number_of_arguments(self.model_init) == 0:
            model = self.model_init()
        else:
            model = self.model_init(params)
        if model is None:
            raise RuntimeError("model_init returned None")
        self._apply_loss_options(model)
        return model

    # -- optimiser ------------------------------------------------------------------------------

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """transformers' eval loader, with every study: `dataloader_drop_last` (which keeps contrastive training
        batches full) would leave the last partial batch, or a split smaller than one batch, out of the metrics."""
        with _keep_last_batch(self.args):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """transformers' test loader, with every study (see `get_eval_dataloader`)."""
        with _keep_last_batch(self.args):
            return super().get_test_dataloader(test_dataset)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW over :func:`parameter_groups` (two learning rates, no decay on norms/biases/logit scale)."""
        if self.optimizer is None:
            opt_model = self.accelerator.unwrap_model(self.model if model is None else model)
            head_lr = float(getattr(self.args, "head_learning_rate", self.args.learning_rate))
            groups = parameter_groups(opt_model, self.args.learning_rate, head_lr, self.args.weight_decay)
            if not groups:
                raise ValueError("the model has no trainable parameters (check trainable_image_blocks/text_blocks)")
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            special = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
            if special:
                raise ValueError(f"optim={self.args.optim!r} builds its own parameter groups; use adamw_torch")
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # -- loss and its terms ---------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The model's composite loss; its three terms are accumulated for logging."""
        if inputs.get("labels") is None:
            raise ValueError("batches need `labels` (0 normal / 1 abnormal) to compute the composite loss")
        outputs = model(**inputs)
        loss = outputs["loss"]
        names = LOSS_TERMS + tuple(name for name in MULTILABEL_LOSS_TERMS if outputs.get(name) is not None)
        terms = [outputs[name] for name in names]
        if model.training:
            self._meters["train"].add(terms, 1.0, names)
            self._meters["train_total"].add(terms, 1.0, names)
        else:
            self._meters["eval"].add(terms, float(inputs["labels"].shape[0]), names)
        return (loss, outputs) if return_outputs else loss

    def _gather_sums(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.args.world_size <= 1:
            return tensor
        return self.accelerator.gather(tensor.to(self.args.device))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the running means of the loss terms to training logs (`bce_loss`... and `train_bce_loss`...)."""
        if "loss" in logs:
            logs.update(self._meters["train"].pop(self._gather_sums, self._meters["train"].has_data))
        if "train_loss" in logs:
            means = self._meters["train_total"].pop(self._gather_sums, self._meters["train_total"].has_data)
            logs.update({f"train_{k}": v for k, v in means.items()})
        super().log(logs, start_time)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        for meter in self._meters.values():
            meter.sums = None
        return super().train(*args, **kwargs)

    # -- evaluation -------------------------------------------------------------------------------

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, tuple[torch.Tensor, ...] | None, torch.Tensor | None]:
        """Loss (when labels are given) and `(logits, image_embeds, text_embeds)` for the retrieval metrics.

        With multi-label findings the predictions gain `finding_logits` (when the model has the head) and the
        labels become `(labels, finding_labels, finding_known)` (when the batch has them).
        """
        inputs = self._prepare_inputs(inputs)
        labels = inputs.get("labels")
        with torch.no_grad():
            if labels is not None:
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                loss = loss.detach().mean()
            else:
                loss, outputs = None, model(**inputs)
        if prediction_loss_only:
            return loss, None, None
        predictions = tuple(outputs[name].detach() for name in ("logits", "image_embeds", "text_embeds"))
        if outputs.get("finding_logits") is not None:
            predictions += (outputs["finding_logits"].detach(),)
        if labels is not None and inputs.get("finding_labels") is not None:
            labels = (labels, inputs["finding_labels"], inputs["finding_known"].float())
        return loss, predictions, labels

    def evaluation_loop(self, dataloader: Any, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> Any:
        """Trainer's loop, plus `<prefix>_bce_loss`, `<prefix>_supcon_loss`, `<prefix>_clip_loss` (per-example means)."""
        self._meters["eval"].sums = None
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        # Every process ran the same number of eval batches, so has_data agrees across processes.
        means = self._meters["eval"].pop(self._gather_sums, self._meters["eval"].has_data)
        output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in means.items()})
        return output

    # -- hyper-parameter search -------------------------------------------------------------------

    def hyperparameter_search(
        self,
        hp_space: Callable[[Any], dict[str, Any]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None,
        n_trials: int = 20,
        direction: str = "maximize",
        backend: str = "optuna",
        hp_name: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> BestRun | None:
        """Optuna search (seeded TPE unless `sampler` is given) over `hp_space` (default :func:`default_hp_space`).

        Returns the best run on the main process (None elsewhere); the study is kept in `self.hp_study`
        (main process) with every trial's evaluation metrics in `trial.user_attrs["metrics"]`.
        """
        if backend != "optuna":
            raise ValueError(f"CxrMtClipTrainer.hyperparameter_search supports backend='optuna', got {backend!r}")
        import optuna

        full_space = hp_space or default_hp_space
        objective = compute_objective or default_objective
        self._model_hp_space = full_space
        args_fields = {f.name for f in dataclasses.fields(self.args)}

        def args_space(trial: Any) -> dict[str, Any]:
            # Every parameter is suggested (so it is recorded); only TrainingArguments fields are returned.
            return {k: v for k, v in full_space(trial).items() if k in args_fields}

        def recorded_objective(metrics: dict[str, float]) -> float:
            value = objective(metrics)
            trial = getattr(self, "_trial", None)
            if hasattr(trial, "set_user_attr"):
                trial.set_user_attr("metrics", {k: json_safe(v, allow_nan=True) for k, v in metrics.items()})
            return value

        kwargs.setdefault("sampler", optuna.samplers.TPESampler(seed=self.args.seed))
        storage = kwargs.setdefault("storage", optuna.storages.InMemoryStorage())
        study_name = kwargs.setdefault("study_name", "cxr_mtclip_hpo")
        try:
            best = super().hyperparameter_search(
                hp_space=args_space,
                compute_objective=recorded_objective,
                n_trials=n_trials,
                direction=direction,
                backend=backend,
                hp_name=hp_name,
                **kwargs,
            )
        finally:
            self._model_hp_space = None
        if self.args.process_index == 0:
            self.hp_study = optuna.load_study(study_name=study_name, storage=storage)
        return best

