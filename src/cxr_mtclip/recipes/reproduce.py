"""Reproduce the paper's Tables I-III: download, build OpenI, fine-tune BiomedCLIP, evaluate three models side by side.

Online (`run_reproduction(mode="online")`): the NLM tarballs of OpenI are downloaded (`download_openi`) and built
into a `DatasetDict` with the paper's split; BiomedCLIP is fine-tuned with the paper's recipe through
`cxr_mtclip.recipes.train.run_training` (optionally after an optuna search of the loss weights); CLIP ViT-B/16
(OpenAI weights, open_clip), zero-shot BiomedCLIP and the fine-tuned model are evaluated with
`cxr_mtclip.evaluation.evaluate.evaluate_models` on the test split; `paper_comparison.md` / `.json` lay out
Tables I-III as the paper does (I: Accuracy@k and mean similarity@k both ways; II / III: image->text / text->image
label precision), in the paper's protocol, with our value [95 % bootstrap CI] beside each published value of
``paper_results.json``, then our extra tables, named as ours: the standard metric definitions, the cross-modal
protocol, the own-pair analysis (paper vs cross-modal Accuracy@1 and the measured own-pair scores) and the head.

The online recipe is the default and never changes itself into something else: before any long step it checks
that BiomedCLIP's and CLIP's files are in the Hugging Face cache or downloadable (`check_online_recipe`), and when
they are not (no network, ``HF_HUB_OFFLINE=1`` with an empty cache) it stops with one line saying what is missing
(`ReproductionUnavailable`; exit code 2 from `main`). It runs offline when everything is cached: the NLM tarballs in
``<cache_dir>/NLMCXR`` and the two model repos in the Hub cache. Models whose cached repo is a simulation written by
`cxr_mtclip.testing.hub` (random weights) are named as such in every table.

Offline (`mode="offline"`, only when asked for: ``--offline``): the same pipeline (save the data, save the starting
model, `run_training`, `evaluate_models`, comparison) runs on the tiny demo architecture and synthetic phantoms
(optionally paired with real reports), with a tiny random-init open_clip CLIP as the CLIP stand-in; every table
says so.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_file, atomic_write_text
from ..configuration_cxr_mtclip import BIOMEDCLIP_HUB_ID
from ..utils import json_safe, quiet_progress_bars, torch_threads
from .paper_comparison import (
    MODEL_KEYS,
    PAPER_ARXIV_ID,
    PAPER_TABLES,
    build_comparison,
    format_comparison_markdown,
    load_paper_results,
)

__all__ = [
    "MODEL_KEYS",
    "OPENI_URLS",
    "PAPER_ARXIV_ID",
    "PAPER_TABLES",
    "ReproductionResult",
    "ReproductionUnavailable",
    "build_comparison",
    "build_parser",
    "check_online_recipe",
    "download_file",
    "download_openi",
    "format_comparison_markdown",
    "hub_available",
    "load_paper_results",
    "main",
    "resolve_mode",
    "run_reproduction",
]

OPENI_BASE_URL = "https://openi.nlm.nih.gov/imgs/collections/"
OPENI_FILES = ("NLMCXR_reports.tgz", "NLMCXR_png.tgz")
OPENI_URLS = tuple(OPENI_BASE_URL + name for name in OPENI_FILES)
OPENI_FOLDER = "NLMCXR"
_ONLINE_NAMES = {
    "clip": "CLIP ViT-B/16 (openai)",
    "biomedclip_zero_shot": "BiomedCLIP zero-shot",
    "biomedclip_fine_tuned": "BiomedCLIP fine-tuned",
}
_OFFLINE_NAMES = {
    "clip": "CLIP stand-in (tiny open_clip, random init)",
    "biomedclip_zero_shot": "zero-shot stand-in (tiny, untrained)",
    "biomedclip_fine_tuned": "fine-tuned stand-in (tiny, trained)",
}
_SIMULATED = " [SIMULATED Hub repo: random weights]"
_TRUE = {"1", "true", "yes", "on"}


class ReproductionUnavailable(RuntimeError):
    """The paper's recipe cannot run here (a model or data file is neither cached nor downloadable); one line."""


@dataclass
class ReproductionResult:
    """What `run_reproduction` did and wrote."""

    mode: str
    output_dir: Path
    results: dict[str, Any]
    comparison: dict[str, Any]
    markdown_path: Path
    json_path: Path
    table: str


# -- downloads -----------------------------------------------------------------------------------------


def download_file(url: str, dest: str | os.PathLike, *, timeout: float = 60.0, show_progress: bool = True) -> Path:
    """Download `url` to `dest` (temp file in the same folder, renamed when complete); an existing file is kept.

    A download whose length differs from the server's Content-Length raises OSError and leaves nothing behind.

    Example:
        >>> download_file("https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz", "cache/NLMCXR_reports.tgz")  # doctest: +SKIP
    """
    dest = Path(dest)
    if dest.is_file() and dest.stat().st_size > 0:
        return dest
    request = urllib.request.Request(url, headers={"User-Agent": "cxr_mtclip reproduce_paper"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_file(dest) as tmp:
            header = response.headers.get("Content-Length")
            expected = int(header) if header and header.isdigit() else None
            written, next_report = 0, 0
            with open(tmp, "wb") as handle:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    handle.write(chunk)
                    written += len(chunk)
                    if show_progress and written >= next_report:
                        total = f" of {expected / 1e6:.0f} MB" if expected else ""
                        print(f"  {dest.name}: {written / 1e6:.0f} MB{total}", file=sys.stderr)
                        next_report = written + (50 << 20)
            if expected is not None and written != expected:
                raise OSError(f"{url}: received {written} bytes but the server announced {expected}; run again")
    except urllib.error.URLError as err:
        raise OSError(f"could not download {url} ({err.reason}); fetch it by hand into {dest.parent}") from err
    return dest


def download_openi(cache_dir: str | os.PathLike, urls: Sequence[str] = OPENI_URLS, *, show_progress: bool = True) -> Path:
    """Fetch the NLM OpenI tarballs (reports XML + PNG images) into ``<cache_dir>/NLMCXR``; returns that folder.

    Example:
        >>> folder = download_openi("~/.cache/cxr_mtclip")  # doctest: +SKIP
    """
    folder = Path(cache_dir).expanduser() / OPENI_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for url in urls:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise ValueError(f"{url}: the URL names no file")
        download_file(url, folder / name, show_progress=show_progress)
    return folder


def hub_available(timeout: float = 5.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the Hugging Face Hub does not answer within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return False
    from huggingface_hub import constants

    repo = BIOMEDCLIP_HUB_ID.removeprefix("hf-hub:")
    request = urllib.request.Request(f"{constants.ENDPOINT}/api/models/{repo}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def resolve_mode(mode: str = "online") -> str:
    """Check `mode`: ``"online"`` (the paper's recipe) or ``"offline"`` (the tiny stand-in, only when asked for).

    There is no automatic choice: a run meant to reproduce the paper must not turn into a toy run because one
    request failed.
    """
    if mode not in ("online", "offline"):
        raise ValueError(f"mode must be 'online' (the paper's recipe) or 'offline' (tiny stand-in), got {mode!r}")
    return mode


def check_online_recipe(
    backbone: str = BIOMEDCLIP_HUB_ID,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
) -> dict[str, bool]:
    """Make sure the recipe's model files are cached or downloadable; ``{"backbone": simulated?, "clip": simulated?}``.

    BiomedCLIP's config and weights (`cxr_mtclip.backbone.resolve_backbone`) and CLIP's weights
    (`cxr_mtclip.recipes.clip_baseline.open_clip_baseline_files`) are fetched now, before the long steps. Raises
    `ReproductionUnavailable` with one line naming the missing file, the repo and the cache folder.
    """
    from ..backbone import resolve_backbone
    from .clip_baseline import CLIP_BASELINE_MODEL, CLIP_BASELINE_PRETRAINED, open_clip_baseline_files
    from ..testing.hub import is_simulated_repo

    clip_model = clip_model or CLIP_BASELINE_MODEL
    if clip_pretrained is None and not clip_model.startswith("hf-hub:"):
        clip_pretrained = CLIP_BASELINE_PRETRAINED
    try:
        resolve_backbone(backbone)
        clip_file = open_clip_baseline_files(clip_model, clip_pretrained)
    except (OSError, ValueError) as err:
        raise ReproductionUnavailable(
            f"cannot run the paper's recipe: {err}. Run it with network access (or a filled cache), "
            "or pass --offline for the tiny stand-in (not the paper's models)."
        ) from err
    simulated_backbone = backbone.startswith("hf-hub:") and is_simulated_repo(backbone)
    # the weights file lies in <cache>/models--org--name/snapshots/<rev>/: its repo is that of the cache folder
    repo_folder = Path(clip_file).parents[2].name
    clip_repo = "/".join(repo_folder.split("--")[1:]) if repo_folder.startswith("models--") else ""
    return {"backbone": simulated_backbone, "clip": bool(clip_repo) and is_simulated_repo(clip_repo)}


# -- the paper's published numbers ---------------------------------------------------------------------


def run_reproduction(
    output_dir: str | os.PathLike,
    *,
    paper_results: str | os.PathLike,
    mode: str = "online",
    cache_dir: str | os.PathLike | None = None,
    backbone: str = BIOMEDCLIP_HUB_ID,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    openi: str | os.PathLike | None = None,
    hpo_trials: int = 0,
    seed: int = 0,
    split_seed: int = 42,
    n_studies: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    ks: Sequence[int] = (1, 3, 5, 10),
    n_boot: int = 1000,
    verbose: bool = True,
) -> ReproductionResult:
    """Run the reproduction online (BiomedCLIP + OpenI) or offline (tiny stand-ins + phantoms); see the module doc.

    Args:
        paper_results: ``paper_results.json`` (checked first, so a bad file fails before any download).
        mode: ``"online"`` (the paper's recipe; `ReproductionUnavailable` when it cannot run) or ``"offline"``.
        cache_dir: online: where the OpenI tarballs and the built dataset go (default ~/.cache/cxr_mtclip);
            the model weights go to the Hugging Face cache (``HF_HUB_CACHE``).
        backbone, clip_model, clip_pretrained: online: the models (default BiomedCLIP's hub id and open_clip's
            ``("ViT-B-16", "openai")``).
        openi: offline only: a folder with ``reports.csv`` (../shared/openi) to pair phantoms with real reports,
            or a saved DatasetDict of real studies.
        hpo_trials: optuna trials over the loss weights before the final fine-tuning (the paper used 20).
        n_studies, epochs, batch_size, learning_rate: override the recipe (offline defaults: the demo's
            1200 studies, 60 epochs, batch 64, 3e-3; online defaults: the paper's 20 epochs, batch 128, 1e-5).

    Example:
        >>> run_reproduction("repro", paper_results="examples/paper_results.json", mode="offline")  # doctest: +SKIP
    """
    paper = load_paper_results(paper_results)
    mode = resolve_mode(mode)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    start = time.time()
    if mode == "online":
        models, test, note, banner, names = _online_models(out, cache_dir, hpo_trials, seed, split_seed, epochs,
                                                           batch_size, learning_rate, say, verbose,
                                                           backbone, clip_model, clip_pretrained)
    else:
        models, test, note, banner, names = _offline_models(out, openi, hpo_trials, seed, n_studies, epochs,
                                                            batch_size, learning_rate, say, verbose)
    from ..evaluation.evaluate import evaluate_models

    say(f"[4/5] evaluating {', '.join(models)} on the test split ({len(test)} studies), both protocols")
    results = evaluate_models(models, test, out / "eval", protocol="both", data_note=note, ks=ks, seed=seed,
                              n_boot=n_boot, batch_size=32, show_progress=verbose)
    say("[5/5] tables next to the published values")
    comparison = build_comparison(results, paper, names)
    comparison.update({"mode": mode, "banner": banner, "data_note": note, "citation": paper["citation"],
                       "paper_status": paper.get("status"), "seconds": round(time.time() - start, 1)})
    table = format_comparison_markdown(results, paper, comparison, banner=banner)
    json_path, markdown_path = out / "paper_comparison.json", out / "paper_comparison.md"
    atomic_write_text(json_path, json.dumps(json_safe(comparison), indent=2, allow_nan=False) + "\n")
    atomic_write_text(markdown_path, table)
    say(table)
    clip = comparison["ours_extra"]["own_pair"]["clip"]["text_to_image"]
    say(f"{names['clip']}: report -> image Accuracy@1 {_three(clip['accuracy@1 paper'])} in the paper protocol vs "
        f"{_three(clip['accuracy@1 cross-modal'])} cross-modal: each report query is half of its own study's fused "
        f"vector (own-pair score median {_three(clip['own-pair score median'])}), which no other study shares.")
    say(f"wrote {markdown_path}, {json_path} and {out / 'eval'} ({time.time() - start:.0f} s) [{banner}]")
    return ReproductionResult(mode, out, results, comparison, markdown_path, json_path, table)


def _three(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.3f}"


def _training_arguments(output_dir: Path, seed: int, hpo_trials: int, verbose: bool, **settings: Any) -> Any:
    import torch

    from ..training import CxrMtClipTrainingArguments

    params = dict(output_dir=str(output_dir), seed=seed, data_seed=seed, hpo_trials=hpo_trials, report_to="none",
                  disable_tqdm=not verbose, use_cpu=not torch.cuda.is_available(),
                  overwrite_output_dir=True)  # the reproduction owns its folders: a re-run replaces its models
    params.update(settings)
    return CxrMtClipTrainingArguments(**params)


def _given(**values: Any) -> dict[str, Any]:
    """The recipe overrides the user actually gave (None = keep the recipe's value)."""
    return {key: value for key, value in values.items() if value is not None}


def _online_models(out: Path, cache_dir: Any, hpo_trials: int, seed: int, split_seed: int, epochs: Any,
                   batch_size: Any, learning_rate: Any, say: Any, verbose: bool, backbone: str = BIOMEDCLIP_HUB_ID,
                   clip_model: str | None = None,
                   clip_pretrained: str | None = None) -> tuple[dict, Any, str, str, dict]:
    from datasets import load_from_disk

    from .clip_baseline import CLIP_BASELINE_MODEL, CLIP_BASELINE_PRETRAINED, load_open_clip_baseline
    from ..data import build_openi_dataset
    from ..hub import load_model_and_processor
    from .train import DataArguments, ModelArguments, run_training

    clip_model = clip_model or CLIP_BASELINE_MODEL
    if clip_pretrained is None and not clip_model.startswith("hf-hub:"):
        clip_pretrained = CLIP_BASELINE_PRETRAINED
    say(f"[0/5] checking the model files: {backbone}, CLIP {clip_model} ({clip_pretrained or 'hub weights'})")
    simulated = check_online_recipe(backbone, clip_model, clip_pretrained)
    cache = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "cxr_mtclip"
    say(f"[1/5] OpenI: downloading the NLM tarballs into {cache / OPENI_FOLDER} (kept if already there)")
    try:
        source = download_openi(cache, show_progress=verbose)
    except OSError as err:
        raise ReproductionUnavailable(f"cannot run the paper's recipe: {err}; or pass --offline for the tiny "
                                      "stand-in (not the paper's data)") from err
    data_dir = cache / f"openi_split{split_seed}"
    if not (data_dir / "dataset_dict.json").is_file():
        say(f"      building the DatasetDict (one frontal image per study, test 200 + 200, seed {split_seed}) in {data_dir}")
        build_openi_dataset(source, data_dir, seed=split_seed, test_per_class=200, overwrite=True, show_progress=verbose)
    test = load_from_disk(str(data_dir))["test"]
    say(f"[2/5] fine-tuning BiomedCLIP ({backbone}) with the paper's recipe"
        + (f" after a {hpo_trials}-trial search of the loss weights" if hpo_trials else ""))
    run_dir = out / "fine-tuned"
    args = _training_arguments(run_dir, seed, hpo_trials, verbose, **_given(
        num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=learning_rate))
    run_training(ModelArguments(backbone=backbone), DataArguments(dataset=str(data_dir)), args)
    say(f"[3/5] loading CLIP {clip_model} ({clip_pretrained or 'hub weights'}), zero-shot and fine-tuned BiomedCLIP")
    device = "cuda" if _cuda() else "cpu"
    names = dict(_ONLINE_NAMES)
    if simulated["clip"]:
        names["clip"] += _SIMULATED
    if simulated["backbone"]:
        names["biomedclip_zero_shot"] += _SIMULATED
        names["biomedclip_fine_tuned"] += _SIMULATED
    models = {
        names["clip"]: load_open_clip_baseline(clip_model, clip_pretrained, seed=seed, device=device),
        names["biomedclip_zero_shot"]: load_model_and_processor(backbone, seed=seed, device=device),
        names["biomedclip_fine_tuned"]: load_model_and_processor(run_dir, seed=seed, device=device),
    }
    # the tarballs' content is not checked here: say where they came from rather than what they hold
    note = f"OpenI (NLM) test split, built from the tarballs in {source}, seed {split_seed} ({data_dir})"
    banner = "ONLINE: BiomedCLIP and CLIP ViT-B/16 pretrained weights, real OpenI data"
    if any(simulated.values()):
        which = [key for key, flag in (("CLIP", simulated["clip"]), ("BiomedCLIP", simulated["backbone"])) if flag]
        banner = (f"ONLINE RECIPE ON A SIMULATED HUB: {' and '.join(which)} weights are random (repos written by "
                  "cxr_mtclip.testing.hub), not the published models; not comparable with the paper's numbers")
    return models, test, note, banner, names


def _offline_models(out: Path, openi: Any, hpo_trials: int, seed: int, n_studies: Any, epochs: Any,
                    batch_size: Any, learning_rate: Any, say: Any, verbose: bool) -> tuple[dict, Any, str, str, dict]:
    import torch

    from ..atomic import atomic_directory
    from .clip_baseline import tiny_open_clip_baseline
    from ..configuration_cxr_mtclip import CxrMtClipConfig
    from ..data import data_provenance, phantom_dataset_card, save_dataset
    from .demo import DEMO_ARCHITECTURE, DEMO_EPOCHS, DEMO_IMAGE_SIZE, DEMO_STUDIES, load_demo_data
    from ..modeling_cxr_mtclip import CxrMtClipModel
    from ..processing_cxr_mtclip import CxrMtClipProcessor, build_wordpiece_tokenizer
    from ..hub import load_model_and_processor
    from .train import DataArguments, ModelArguments, run_training

    n_studies = n_studies or DEMO_STUDIES
    say(f"[1/5] OFFLINE: {n_studies} studies of synthetic phantoms (no download), saved to {out / 'data'}")
    splits, data_note = load_demo_data(openi, n_studies, seed)
    if data_provenance(splits) == "synthetic":  # phantoms get a card saying so; a real build keeps its own card
        reports = str(openi) if openi is not None else None
        card = phantom_dataset_card(splits, seed=seed, image_size=DEMO_IMAGE_SIZE, real_reports=reports)
        save_dataset(splits, out / "data", card, show_progress=verbose)
    else:
        with atomic_directory(out / "data") as tmp:
            splits.save_to_disk(str(tmp))
    tokenizer = build_wordpiece_tokenizer(splits["train"]["report"], out / "tokenizer", vocab_size=1000)
    config = CxrMtClipConfig.from_registry(DEMO_ARCHITECTURE, vocab_size=len(tokenizer))
    processor = CxrMtClipProcessor.from_config(config, tokenizer)
    start_dir = out / "zero-shot"
    torch.manual_seed(seed)
    with atomic_directory(start_dir) as tmp:  # model + processor appear together or not at all
        CxrMtClipModel(config).save_pretrained(tmp)
        processor.save_pretrained(tmp)
    lr = learning_rate or 3e-3
    say(f"[2/5] fine-tuning the tiny demo model from random init (demo recipe: bce {config.bce_weight}, supcon "
        f"{config.supcon_weight}, clip {config.clip_weight}; lr {lr}; the paper's weights collapse random towers)"
        + (f" after a {hpo_trials}-trial search of the loss weights" if hpo_trials else ""))
    run_dir = out / "fine-tuned"
    args = _training_arguments(
        run_dir, seed, hpo_trials, verbose, num_train_epochs=epochs or DEMO_EPOCHS,
        per_device_train_batch_size=batch_size or 64, per_device_eval_batch_size=batch_size or 64,
        learning_rate=lr, head_learning_rate=lr, eval_strategy="no", save_strategy="no",
        dataloader_drop_last=True, metric_for_best_model=None, logging_steps=10,
        logging_first_step=True,  # short runs still log a loss for run_training's loss-curve plot
    )
    run_training(ModelArguments(model_name_or_path=str(start_dir)), DataArguments(dataset=str(out / "data")), args)
    say("[3/5] loading the stand-ins: tiny random-init open_clip CLIP, untrained and fine-tuned tiny models")
    models = {
        _OFFLINE_NAMES["clip"]: tiny_open_clip_baseline(seed=seed, image_size=DEMO_IMAGE_SIZE),
        _OFFLINE_NAMES["biomedclip_zero_shot"]: load_model_and_processor(start_dir, seed=seed),
        _OFFLINE_NAMES["biomedclip_fine_tuned"]: load_model_and_processor(run_dir, seed=seed),
    }
    images = "synthetic phantom images" if "SYNTHETIC" in data_note else "the given studies"
    banner = (f"OFFLINE STAND-IN: tiny random-init towers (not BiomedCLIP, not CLIP ViT-B/16) trained on {images}; "
              "not comparable with the paper's numbers")
    note = f"OFFLINE STAND-IN: {data_note}"
    return models, splits["test"], note, banner, _OFFLINE_NAMES


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# -- command line ---------------------------------------------------------------------------------------


def build_parser(default_paper_results: str | os.PathLike | None = None) -> Any:
    """Flags of `examples/reproduce_paper.py`."""
    from ..argparsing import CliParser

    parser = CliParser(  # one-line errors, defaults in --help, misspelt-flag suggestions
        prog="reproduce_paper.py",
        description="Reproduce Tables I-III of arXiv 2601.05399 (CLIP, zero-shot BiomedCLIP, fine-tuned BiomedCLIP on "
        "OpenI) next to the published values; offline, the same pipeline on tiny stand-ins and synthetic phantoms.",
    )
    parser.add_argument("--output_dir", default="runs/reproduce", help="where data, models, tables and plots go")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--offline", action="store_true",
                       help="run the tiny stand-ins on phantoms instead of the paper's recipe (no network needed)")
    where.add_argument("--online", action="store_true",
                       help="the paper's recipe (the default): BiomedCLIP + CLIP from the Hub cache or network")
    parser.add_argument("--paper_results", default=default_paper_results, required=default_paper_results is None,
                        help="the published values (examples/paper_results.json)")
    parser.add_argument("--cache_dir", default=None, help="online: OpenI tarballs and built dataset (~/.cache/cxr_mtclip)")
    parser.add_argument("--backbone", default=BIOMEDCLIP_HUB_ID, help="online: the open_clip backbone to fine-tune")
    parser.add_argument("--clip_model", default=None, help="online: the CLIP baseline (default ViT-B-16, or an hf-hub: id)")
    parser.add_argument("--clip_pretrained", default=None, help="online: its open_clip weights tag (default openai)")
    parser.add_argument("--openi", default=None, help="offline: ../shared/openi (real reports for the phantoms) or a DatasetDict")
    parser.add_argument("--hpo_trials", type=int, default=0, help="optuna trials over the loss weights first (paper: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training (and, offline, of the phantoms)")
    parser.add_argument("--split_seed", type=int, default=42, help="online: seed of the OpenI train/validation/test split")
    parser.add_argument("--n_studies", type=int, default=None, help="offline: phantom studies (default 1200)")
    parser.add_argument("--epochs", type=float, default=None, help="default: 20 online (paper), 60 offline (demo)")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 128 online (paper), 64 offline")
    parser.add_argument("--learning_rate", type=float, default=None, help="default: 1e-5 online (paper), 3e-3 offline")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10], help="cut-offs k of the @k metrics")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the 95%% intervals")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is much faster on a busy shared CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def offline_size_problem(n_studies: int | None, batch_size: int | None, openi: str | os.PathLike | None) -> str | None:
    """Why an offline run of `n_studies` phantoms could not train one full batch (None when it can); checked before
    any work. (Was: the data and the untrained model were written, then transformers' "args.max_steps must be set to
    a positive value".) A saved DatasetDict given as `openi` is checked by `run_training` on its real splits."""
    from .demo import DEMO_STUDIES, expected_train_size

    if openi is not None and (Path(openi) / "dataset_dict.json").is_file():
        return None
    n, batch = n_studies or DEMO_STUDIES, batch_size or 64
    if n < 1 or batch < 1:
        return f"--n_studies and --batch_size must be >= 1, got {n} and {batch}"
    n_train = expected_train_size(n)
    if n_train >= batch:
        return None
    needed = next(m for m in range(n, n + 20 * batch + 1000) if expected_train_size(m) >= batch)
    return (f"--n_studies {n} leaves about {n_train} training studies, fewer than one batch of {batch} (full batches "
            f"only): no training step would run; pass --n_studies {needed} or more, or --batch_size {max(1, n_train)} "
            "or less")


def main(argv: Sequence[str] | None = None, *, default_paper_results: str | os.PathLike | None = None) -> int:
    """Parse `argv` and run `run_reproduction`; returns 0, or 2 with one line on stderr when the recipe cannot run."""
    parser = build_parser(default_paper_results)
    args = parser.parse_args(argv)
    if args.hpo_trials < 0:
        parser.error("--hpo_trials must be >= 0")
    mode = "offline" if args.offline else "online"
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if mode == "offline":
        problem = offline_size_problem(args.n_studies, args.batch_size, args.openi)
        if problem:
            parser.error(problem)
    try:
        with quiet_progress_bars(args.quiet), torch_threads(args.threads):
            run_reproduction(
                args.output_dir, paper_results=args.paper_results, mode=mode, cache_dir=args.cache_dir,
                backbone=args.backbone, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
                openi=args.openi, hpo_trials=args.hpo_trials, seed=args.seed, split_seed=args.split_seed,
                n_studies=args.n_studies, epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, ks=args.ks, n_boot=args.n_boot, verbose=not args.quiet,
            )
    except ReproductionUnavailable as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0

