"""Hugging Face Space entry point: the `cxr-mtclip serve` app, given a model id and an index folder.

On a Space (sdk: gradio) the platform runs ``python app.py`` with SYSTEM=spaces and GRADIO_SERVER_NAME=0.0.0.0 /
GRADIO_SERVER_PORT=7860 in the environment; launch() takes the host and port from there (127.0.0.1 would make the
Space unreachable). Run locally, it stays on 127.0.0.1. The module-level `demo` is what the Spaces reloader finds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cxr_mtclip.retrieval import RetrievalIndex
from cxr_mtclip.retrieval.app import build_demo, launch_kwargs

MODEL_ID = os.environ.get("CXR_MODEL_ID")
INDEX = os.environ.get("CXR_INDEX", "index")


def resolve_index(index: str) -> Path:
    """A folder in the Space, or a Hub dataset repo id holding an index folder (downloaded once into the HF cache)."""
    if Path(index).is_dir():
        return Path(index)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=index, repo_type="dataset"))


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)
folder = resolve_index(INDEX)
if MODEL_ID is None:  # the manifest names the model the index was built with
    from cxr_mtclip.retrieval.store import MANIFEST_NAME, IndexManifest

    MODEL_ID = IndexManifest.read(folder / MANIFEST_NAME).model_id
index = RetrievalIndex.load(folder, model=MODEL_ID)  # refuses a model whose fingerprint differs from the manifest's
demo = build_demo(index)

if __name__ == "__main__":
    on_space = os.environ.get("SYSTEM") == "spaces"
    host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    demo.launch(**launch_kwargs(host=host, port=port, max_file_size=os.environ.get("CXR_MAX_FILE_SIZE", "10mb")))
