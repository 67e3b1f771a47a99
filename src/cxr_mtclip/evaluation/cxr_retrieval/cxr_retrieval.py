"""`evaluate` metric: bidirectional image <-> report retrieval and normal/abnormal classification.

Loaded offline from the installed package with ``evaluate.load(metric_module_path())``.
`evaluate` copies this script into its modules cache and imports it on its own, so it uses
absolute imports only; every number comes from ``cxr_mtclip.evaluation.metrics`` (docs/metrics.md).
"""

import datasets
import evaluate
import numpy as np

from cxr_mtclip.evaluation.metrics import bidirectional_retrieval_metrics, classification_metrics

_DESCRIPTION = """
Retrieval metrics of paired chest X-ray image and report embeddings, in both directions
(keys image_to_text/<metric> and text_to_image/<metric>): accuracy@k, accuracy_dedup@k (with texts),
mean_cosine@k, precision@k, f1, roc_auc, map, and beside them the paper-compatible readings of the
paper's Tables II-III: label_hit_rate@k, f1@1, roc_auc_top1_score, map_top1_score (+ roc_auc_top10_mean_score,
map_top10_mean_score with 10 or more studies). Query i is paired with gallery row i.
Configurations (the configuration name is the protocol of every key it returns):
"cross-modal" (default; image queries vs report embeddings and vice versa),
"paper" (image and report queries vs the fused embeddings, the paper's Algorithm 2) and
"classification" (ROC AUC, F1, accuracy of the abnormal logit; keys classification/<metric>).
"""

_CITATION = """
@misc{liang2026multitask,
  title = {Multi-task Cross-modal Learning for Chest X-ray Image Retrieval},
  author = {Liang, Zhaohui and Rajaraman, Sivaramakrishnan and Marini, Niccolo and Xue, Zhiyun and Antani, Sameer},
  year = {2026},
  eprint = {2601.05399},
  archivePrefix = {arXiv}
}
"""

_KWARGS_DESCRIPTION = """
Args (configurations "cross-modal" and "paper"):
    image_embeds: one image embedding (list of floats) per study.
    text_embeds: one report embedding per study, same dimension.
    fused_embeds: ("paper" only) one fused embedding per study.
    labels: 0 (normal) / 1 (abnormal) per study.
    ks: cut-offs k, default (1, 3, 5, 10).
    texts: optional report text per study; adds accuracy_dedup@k.
    exclude_self: drop each query's own pair from its ranking (default False).
    f1_k: neighbours in the label vote behind f1 (default 5).
Args (configuration "classification"):
    predictions: abnormal logit per study (probabilities with from_logits=False).
    references: 0 (normal) / 1 (abnormal) per study.
Returns:
    dict of floats, keys "image_to_text/accuracy@1", ..., or "classification/roc_auc", ...
Example:
    >>> metric = evaluate.load(metric_module_path())
    >>> metric.compute(image_embeds=[[1.0, 0.0], [0.0, 1.0]], text_embeds=[[1.0, 0.0], [0.0, 1.0]],
    ...                labels=[0, 1], ks=[1])["image_to_text/accuracy@1"]
    1.0
"""

_EMBEDDING = datasets.Sequence(datasets.Value("float32"))
_FEATURES = {
    "cross-modal": datasets.Features(
        {"image_embeds": _EMBEDDING, "text_embeds": _EMBEDDING, "labels": datasets.Value("int64")}
    ),
    "paper": datasets.Features(
        {
            "image_embeds": _EMBEDDING,
            "text_embeds": _EMBEDDING,
            "fused_embeds": _EMBEDDING,
            "labels": datasets.Value("int64"),
        }
    ),
    "classification": datasets.Features(
        {"predictions": datasets.Value("float32"), "references": datasets.Value("int64")}
    ),
}
_ALIASES = {"default": "cross-modal"}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CxrRetrieval(evaluate.Metric):
    """Retrieval (both directions) and classification metrics of cxr_mtclip."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=_FEATURES[self._configuration()],
            reference_urls=["https://arxiv.org/abs/2601.05399"],
        )

    def _configuration(self):
        name = _ALIASES.get(self.config_name, self.config_name)
        if name not in _FEATURES:
            raise ValueError(
                f"unknown config_name {self.config_name!r} for cxr_retrieval; expected one of "
                f"{sorted(_FEATURES)} (or 'default' = 'cross-modal')"
            )
        return name

    def _compute(
        self,
        image_embeds=None,
        text_embeds=None,
        labels=None,
        fused_embeds=None,
        predictions=None,
        references=None,
        ks=(1, 3, 5, 10),
        texts=None,
        exclude_self=False,
        f1_k=None,
        from_logits=True,
    ):
        name = self._configuration()
        if name == "classification":
            return classification_metrics(np.asarray(predictions), np.asarray(references), from_logits=from_logits)
        return bidirectional_retrieval_metrics(
            _stack(image_embeds, "image_embeds"),
            _stack(text_embeds, "text_embeds"),
            np.asarray(labels),
            tuple(ks),
            texts,
            protocol=name,
            fused_embeds=_stack(fused_embeds, "fused_embeds") if name == "paper" else None,
            exclude_self=exclude_self,
            f1_k=f1_k,
        )


def _stack(rows, name):
    """Rows of (possibly ragged) float lists -> a 2-D float32 array, with a clear error when ragged."""
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"{name} rows have different lengths {sorted(lengths)}; expected one embedding dimension")
    return np.asarray([np.asarray(row, dtype=np.float32) for row in rows], dtype=np.float32)
