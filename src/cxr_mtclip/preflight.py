"""Checks an entry point runs before it loads a model or starts work: data sources, Hub access, output folders.

Each check raises `PreflightError` (a `ValueError`) or `FileNotFoundError` with one line that names the problem
and the fix, so `cxr-mtclip train --dataset data/nope --push_to_hub` fails in a second, not after training.
Imports only the standard library and, for the Hub checks, `huggingface_hub` (both load in well under a second).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = [
    "RUN_FILES",
    "PreflightError",
    "check_dataset_source",
    "check_fresh_run_dir",
    "check_hub_push",
    "check_output_dir",
    "clear_earlier_run",
    "earlier_run",
    "hub_is_offline",
    "looks_local",
]

RUN_FILES = ("model.safetensors", "config.json", "all_results.json", "train_results.json", "eval_results.json",
             "test_results.json", "trainer_state.json", "training_args.bin", "README.md", "loss_curves.png",
             "processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "vocab.txt", "trainable_parameters.json", "run_summary.json",
             "best_hyperparameters.json", "hpo_trials.csv", "hpo_trials.json")
"""Files a training run writes at the top of its output folder (what `earlier_run` looks for and
`clear_earlier_run` removes, besides ``checkpoint-N`` folders)."""

_TRUE = {"1", "true", "yes", "on"}


class PreflightError(ValueError):
    """A problem found before any work started; its message names the problem and the fix."""


def hub_is_offline() -> bool:
    """Whether huggingface_hub / datasets are told to stay offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def looks_local(value: str) -> bool:
    """A path a user meant as a folder: explicit (./, ../, /, ~), more than one '/', or under an existing folder."""
    if value.startswith((".", "/", "~", os.sep)) or value.count("/") != 1:
        return True
    return Path(value).parent.is_dir() and Path(value).parent != Path(".")


def check_dataset_source(dataset: str, *, flag: str = "--dataset") -> str:
    """'local' for a saved DatasetDict folder, 'hub' for a Hub dataset id to load; raise when it can be neither.

    Example:
        >>> check_dataset_source("data/nope")  # doctest: +SKIP
        FileNotFoundError: --dataset data/nope: no such local folder; build it with `cxr-mtclip build-dataset ...`
    """
    path = Path(dataset).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PreflightError(f"{flag} {dataset}: a file, not a dataset folder; give the folder written by "
                                 "`cxr-mtclip build-dataset` (it holds dataset_dict.json)")
        if not (path / "dataset_dict.json").is_file():
            raise FileNotFoundError(f"{flag} {dataset}: not a DatasetDict folder (no dataset_dict.json); build one with "
                                    f"`cxr-mtclip build-dataset SOURCE --out {dataset}`")
        return "local"
    fix = f"build it with `cxr-mtclip build-dataset SOURCE --out {dataset}` or `--phantoms N`"
    if looks_local(dataset):
        raise FileNotFoundError(f"{flag} {dataset}: no such local folder; {fix}")
    if hub_is_offline():
        raise FileNotFoundError(f"{flag} {dataset}: no such local folder, and the Hub is offline (HF_HUB_OFFLINE / "
                                f"HF_DATASETS_OFFLINE) so it cannot be a Hub dataset id either; {fix}")
    return "hub"


def check_output_dir(path: str | os.PathLike, *, flag: str = "--output_dir") -> Path:
    """`path` as a folder that exists or can be created, and is writable."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise PreflightError(f"{flag} {path}: a file is in the way; give a folder")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PreflightError(f"{flag} {path}: {probe} is not writable; give a folder you can write to")
    return folder


def earlier_run(path: str | os.PathLike) -> list[str]:
    """Names of an earlier training run's outputs in `path`: ``checkpoint-N`` folders and `RUN_FILES`, sorted."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir()
             if (p.is_dir() and p.name.startswith("checkpoint-") and p.name[len("checkpoint-"):].isdigit())
             or (p.is_file() and p.name in RUN_FILES)]
    return sorted(found)


def check_fresh_run_dir(path: str | os.PathLike, *, resume: Any = None, overwrite: bool = False,
                        flag: str = "--output_dir") -> None:
    """Refuse to train into a folder that holds an earlier run, unless it is resumed or replaced on purpose.

    Two runs in one folder mix their checkpoints, and ``--resume_from_checkpoint last`` then continues whichever
    has the highest step. Raises `PreflightError` naming what is there and the three ways out.
    """
    if overwrite or (resume is not None and str(resume).lower() not in ("false", "none", "no", "")):
        return
    found = earlier_run(path)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise PreflightError(f"{flag} {path}: holds an earlier run ({shown}); pass --resume_from_checkpoint last to "
                             f"continue it, --overwrite_output_dir true to replace it, or another {flag}")


def clear_earlier_run(path: str | os.PathLike) -> list[str]:
    """Remove an earlier run's ``checkpoint-N`` folders and `RUN_FILES` from `path` (nothing else); their names."""
    import shutil

    folder = Path(path).expanduser()
    removed = earlier_run(folder)
    for name in removed:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if (folder / "tokenizer").is_dir():  # the WordPiece tokenizer a run trains on its reports
        shutil.rmtree(folder / "tokenizer")
        removed.append("tokenizer")
    return removed


def check_hub_push(repo_id: str | None, *, token: str | None = None, repo_type: str = "model",
                   flag: str = "--push_to_hub") -> dict[str, Any]:
    """Before any work: the Hub is online and reachable, `repo_id` is a valid name, a token exists, it may write
    there. Returns huggingface_hub's ``whoami`` answer.

    Example:
        >>> check_hub_push("me/cxr-mtclip-openi")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise PreflightError(f"{flag}: no repository name; pass --hub_model_id NAME (or user/NAME)")
    try:
        validate_repo_id(repo_id)
        if repo_id.count("/") > 1:
            raise HFValidationError("more than one '/'")
    except HFValidationError as exc:
        raise PreflightError(f"{flag}: {repo_id!r} is not a valid Hub repository name ({' '.join(str(exc).split())}); "
                             "use 'name' or 'user/name' with letters, digits, '-', '_' and '.'") from exc
    if hub_is_offline() or getattr(constants, "HF_HUB_OFFLINE", False):
        raise PreflightError(f"{flag}: cannot push to {repo_id}: the Hub is offline (HF_HUB_OFFLINE is set); unset it "
                             f"to push, or drop {flag}")
    token = token or get_token()
    if not token:
        raise PreflightError(f"{flag}: no Hugging Face token; log in with `hf auth login` (or set HF_TOKEN, or pass "
                             "--hub_token) before pushing")
    api = HfApi(token=token)
    try:
        me = api.whoami(token=token)
    except Exception as exc:  # connection refused, DNS, proxy, TLS, HTTP 401: all say the push would fail
        status = getattr(getattr(exc, "response", None), "status_code", None)
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if status == 401:
            raise PreflightError(f"{flag}: the Hub refused the token ({reason}); log in again with "
                                 "`hf auth login --force`") from exc
        raise PreflightError(f"{flag}: the Hub ({api.endpoint}) could not be reached to check the token ({reason}); "
                             f"check the network, or drop {flag} and push later") from exc
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PreflightError(f"{flag}: the token of {me.get('name')!r} is read-only; create a write token at "
                             "https://huggingface.co/settings/tokens and log in with it")
    if "/" in repo_id:
        namespace = repo_id.split("/")[0]
        mine = {me.get("name")} | {org.get("name") for org in me.get("orgs") or []}
        if namespace not in mine:
            raise PreflightError(f"{flag}: {me.get('name')!r} cannot write to {repo_id!r}: the namespace {namespace!r} "
                                 f"is not the user or one of their organisations ({', '.join(sorted(filter(None, mine)))})")
    return me
