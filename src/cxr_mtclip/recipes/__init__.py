"""Recipes: whole runs built on the library, importable so that the installed ``cxr-mtclip`` command can start them.

- `train`: flags -> data -> (HPO) -> Trainer -> results and model card (``examples/train.py``, ``cxr-mtclip train``).
- `demo`: the offline demo on phantoms (``cxr-mtclip demo``).
- `ablation`: loss-term ablations over seeds with bootstrap intervals (``examples/ablate.py``).
- `reproduce`: the paper's Tables I-III next to the published values (``examples/reproduce_paper.py``).
- `clip_baseline`: open_clip's native CLIP (the paper's ViT-B/16 baseline) behind the retrieval interface.

Nothing in the library imports a recipe.
"""
