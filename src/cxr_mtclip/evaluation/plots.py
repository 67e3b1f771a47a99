"""Figures written as PNG files: t-SNE of embeddings by label, and training loss curves per loss term.

Uses matplotlib's object API (`Figure`, no pyplot), so no GUI backend is selected and no global
state changes; every file is written atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_file
from ..losses import LOSS_TERMS

__all__ = ["PLOTTED_TERMS", "loss_curves_figure", "plot_loss_curves", "plot_tsne", "tsne_figure", "tsne_perplexity"]

PLOTTED_TERMS = ("loss", *LOSS_TERMS)  # the weighted total, then each unweighted term
_EXACT_TSNE_MAX_POINTS = 500
_LABEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_MARKER_MAX_POINTS = 30  # up to this many points per curve each one gets a marker (one point is a marker alone)


def tsne_perplexity(num_points: int) -> float:
    """sklearn's default 30, lowered to (n - 1) / 3 for small n (t-SNE needs perplexity < n).

    Example:
        >>> tsne_perplexity(24)
        7.666666666666667
    """
    if num_points < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {num_points}")
    return float(min(30.0, max(1.0, (num_points - 1) / 3)))


def plot_tsne(
    embeds: Any,
    labels: Any,
    path: str | os.PathLike,
    title: str,
    *,
    seed: int = 0,
    label_names: Sequence[str] = ("normal", "abnormal"),
    perplexity: float | None = None,
    data_note: str | None = None,
) -> Path:
    """2-D t-SNE (cosine metric, PCA init, `seed`) of `embeds`, points coloured by label, saved as a PNG.

    `data_note` (e.g. "SYNTHETIC phantom images, not real X-rays") is printed under the title.

    Example:
        >>> plot_tsne(fused, labels, "out/tsne.png", "fine-tuned, test split")  # doctest: +SKIP
    """
    from sklearn.manifold import TSNE

    points = np.asarray(embeds, dtype=np.float64)
    classes = np.asarray(labels)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"embeds must have shape (n, dim), got {points.shape}")
    if classes.shape != (points.shape[0],):
        raise ValueError(f"labels must have shape ({points.shape[0]},) (one per embedding), got {classes.shape}")
    if not np.isfinite(points).all():
        raise ValueError("embeds contain NaN or infinite values")
    if perplexity is None:
        perplexity = tsne_perplexity(points.shape[0])
    elif not 0 < perplexity < points.shape[0]:
        raise ValueError(f"perplexity must be in (0, {points.shape[0]}), got {perplexity}")
    coords = TSNE(
        n_components=2, perplexity=perplexity, metric="cosine", init="pca", learning_rate="auto", random_state=seed,
        # exact gradients are faster than Barnes-Hut for a few hundred points
        method="exact" if points.shape[0] <= _EXACT_TSNE_MAX_POINTS else "barnes_hut",
    ).fit_transform(points)
    figure = tsne_figure(coords, classes, title, label_names=label_names, data_note=data_note,
                         footnote=f"t-SNE, cosine, perplexity {perplexity:.1f}, seed {seed}")
    return _save(figure, path)


def tsne_figure(coords: Any, classes: Any, title: str, *, label_names: Sequence[str] = ("normal", "abnormal"),
                data_note: str | None = None, footnote: str = "") -> Any:
    """The t-SNE scatter as a matplotlib `Figure` (what `plot_tsne` saves): one colour per label, the legend with
    each label's count, the title and under it the data note."""
    coords, classes = np.asarray(coords), np.asarray(classes)
    figure, axes = _figure(6.0, 6.0)
    for i, value in enumerate(sorted(np.unique(classes).tolist())):
        chosen = classes == value
        name = label_names[int(value)] if isinstance(value, (int, np.integer)) and 0 <= value < len(label_names) else str(value)
        axes.scatter(coords[chosen, 0], coords[chosen, 1], s=14, alpha=0.8, color=_LABEL_COLOURS[i % len(_LABEL_COLOURS)],
                     label=f"{name} (n={int(chosen.sum())})", edgecolors="none")
    axes.set_title(_with_note(title, data_note), fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="best", fontsize=8, frameon=True)
    if footnote:
        figure.text(0.01, 0.01, footnote, fontsize=7, color="#555555")
    return figure


def _with_note(title: str, data_note: str | None) -> str:
    import textwrap

    if not data_note:
        return title
    return title + "\n" + "\n".join(textwrap.wrap(" ".join(data_note.split()), 90))


def plot_loss_curves(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None,
                     *, data_note: str | None = None) -> Path:
    """Per-term loss curves (`loss`, `bce_loss`, `supcon_loss`, `clip_loss`) from a Trainer `state.log_history`.

    See `loss_curves_figure`; the PNG is written atomically. Raises ValueError for a history with no loss.

    Example:
        >>> plot_loss_curves(trainer.state.log_history, "out/loss_curves.png")  # doctest: +SKIP
    """
    return _save(loss_curves_figure(log_history, title, data_note=data_note), path)


def loss_curves_figure(log_history: Sequence[Mapping[str, Any]], title: str | None = None, *,
                       data_note: str | None = None) -> Any:
    """The loss curves as a matplotlib `Figure`: training terms solid, ``eval_`` terms dashed, one colour per term.

    Legible with one logged point or thousands: curves of up to 30 points mark every point (a single point is a
    marker alone), the legend sits outside the axes on the right, and the title says which curves are there
    (training, validation or both), then `data_note`. Terms absent from the history are skipped; a history with
    none of them raises ValueError.
    """
    if isinstance(log_history, Mapping) or not isinstance(log_history, Sequence):
        raise ValueError("log_history must be a list of dicts (Trainer.state.log_history)")
    series: dict[str, tuple[list[float], list[float]]] = {}
    for position, entry in enumerate(log_history):
        if not isinstance(entry, Mapping):
            raise ValueError(f"log_history[{position}] must be a dict, got {type(entry).__name__}")
        step = entry.get("step", position)
        for prefix in ("", "eval_"):
            for term in PLOTTED_TERMS:
                value = entry.get(prefix + term)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    steps, values = series.setdefault(prefix + term, ([], []))
                    steps.append(float(step))
                    values.append(float(value))
    if not series:
        raise ValueError(f"log_history has none of {PLOTTED_TERMS} (nor their eval_ versions) to plot")

    figure, axes = _figure(8.5, 4.5)
    for i, term in enumerate(PLOTTED_TERMS):
        colour = _LABEL_COLOURS[i % len(_LABEL_COLOURS)]
        for prefix, style, name in (("", "-", "training"), ("eval_", "--", "validation")):
            if prefix + term not in series:
                continue
            steps, values = series[prefix + term]
            few = len(steps) <= _MARKER_MAX_POINTS
            axes.plot(steps, values, color=colour, linewidth=1.5 if not prefix else 1.2, linestyle=style,
                      marker=("o" if not prefix else "s") if few else None, markersize=4 if len(steps) > 1 else 6,
                      label=f"{term} ({name})")
    has_train = any(not name.startswith("eval_") for name in series)
    has_eval = any(name.startswith("eval_") for name in series)
    default_title = ("Training (solid) and validation (dashed) loss per term" if has_train and has_eval
                     else "Training loss per term" if has_train else "Validation loss per term")
    axes.set_xlabel("optimiser step")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers, even around one point
    axes.set_ylabel("loss (terms unweighted;\n`loss` is the weighted sum)")
    axes.set_title(_with_note(title or default_title, data_note), fontsize=10)
    axes.grid(True, alpha=0.3)
    if len({step for steps, _ in series.values() for step in steps}) == 1:  # one step: a visible x range around it
        only = next(iter(series.values()))[0][0]
        axes.set_xlim(only - 1, only + 1)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return figure


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", bbox_inches="tight")  # the legend outside the axes stays in the picture
    return path
