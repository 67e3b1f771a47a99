"""Write the simulated Hub cache (full size on demand) and verify the real BiomedCLIP path against it, offline.

    # ~1.5 GB: BiomedCLIP (784 MB pickle) + BiomedBERT files + CLIP ViT-B/16 openai (600 MB safetensors)
    python scripts/simulated_hub.py write --variant full --cache_dir /tmp/cxr_mtclip_hub_full
    # equivalence figures with open_clip, then the equivalence and end-to-end tests on that cache (pytest)
    nice -n 10 python scripts/simulated_hub.py verify --cache_dir /tmp/cxr_mtclip_hub_full

The weights are random (created by open_clip from the published config); never commit the cache. The vocabulary is
trained on ../shared/openi/reports.csv when present (synthetic reports otherwise). Output recorded in
docs/what-runs-where.md.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# the tests that run on whichever hub $CXR_MTCLIP_SIMULATED_HUB names (the others write their own tiny variants)
HUB_TESTS = [
    "tests/test_open_clip_equivalence.py::test_every_weight_equals_open_clips",
    "tests/test_open_clip_equivalence.py::test_pixels_of_real_openi_images_equal_open_clips",
    "tests/test_open_clip_equivalence.py::test_token_ids_of_all_real_reports_equal_open_clips",
    "tests/test_open_clip_equivalence.py::test_token_ids_of_dirty_text_equal_open_clips",
    "tests/test_open_clip_equivalence.py::test_the_tokenizer_comes_from_the_backbone_repo_itself",
    "tests/test_open_clip_equivalence.py::test_normalised_embeddings_equal_open_clips",
    "tests/test_real_backbone_e2e.py::test_save_then_load_with_an_empty_cache_gives_identical_outputs",
    "tests/test_real_backbone_e2e.py::test_cli_train_on_the_simulated_hub_with_cache_dir",
    "tests/test_real_backbone_e2e.py::test_accelerate_launch_train_script_on_the_simulated_hub",
    "tests/test_real_backbone_e2e.py::test_reproduce_online_runs_on_the_simulated_hub_and_says_so",
]


def _openi() -> Path | None:
    path = Path(os.environ.get("CXR_MTCLIP_OPENI") or REPO_ROOT.parent / "shared" / "openi")
    return path if (path / "reports.csv").is_file() else None


def cmd_write(args: argparse.Namespace) -> int:
    from cxr_mtclip.testing import hub as sim

    start = time.time()
    texts, source = sim.default_report_texts(args.openi or _openi())
    hub = sim.write_simulated_hub(args.cache_dir, variant=args.variant, texts=texts, texts_source=source,
                                  clip=not args.no_clip, seed=args.seed)
    print(f"wrote the {args.variant} simulated hub to {hub.cache_dir} in {time.time() - start:.0f} s "
          f"(vocabulary: {hub.vocab_size} entries from {source})")
    _print_cache(hub.cache_dir)
    return 0


def _print_cache(cache_dir: Path) -> None:
    from huggingface_hub import scan_cache_dir

    report = scan_cache_dir(cache_dir)
    for repo in sorted(report.repos, key=lambda r: r.repo_id):
        for revision in repo.revisions:
            print(f"  {repo.repo_id} @ {revision.commit_hash[:12]} (refs: {', '.join(sorted(revision.refs))})")
            for file in sorted(revision.files, key=lambda f: f.file_name):
                print(f"    {file.file_name:32s} {file.size_on_disk:>12,d} bytes  blob {Path(file.blob_path).name[:16]}")
    if report.warnings:
        print(f"  huggingface_hub scan warnings: {report.warnings}")


def _equivalence_figures(hub) -> None:
    """Max differences between open_clip itself and the package on the full-size simulated repo."""
    import csv

    import open_clip
    import torch
    from PIL import Image

    from cxr_mtclip import CxrMtClipModel, CxrMtClipProcessor
    from cxr_mtclip.data import join_report
    from cxr_mtclip.processing_cxr_mtclip import to_rgb
    from cxr_mtclip.testing import hub as sim

    timer = time.time()
    with sim.hub_cache(hub.cache_dir):
        reference, preprocess = open_clip.create_model_from_pretrained(hub.biomedclip_id)
        tokenizer = open_clip.get_tokenizer(hub.biomedclip_id)
    reference.eval()
    print(f"open_clip.create_model_from_pretrained + get_tokenizer: {time.time() - timer:.1f} s")
    timer = time.time()
    model = CxrMtClipModel.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir, dropout=0.0).eval()
    processor = CxrMtClipProcessor.from_backbone(hub.biomedclip_id, cache_dir=hub.cache_dir)
    print(f"CxrMtClipModel.from_backbone + CxrMtClipProcessor.from_backbone: {time.time() - timer:.1f} s")
    ref_state, our_state = reference.state_dict(), model.backbone.state_dict()
    diff = max((ref_state[k] - our_state[k]).abs().max().item() for k in ref_state)
    print(f"weights: {len(ref_state)} tensors, {sum(v.numel() for v in ref_state.values()):,d} values, "
          f"same keys: {set(ref_state) == set(our_state)}, max |diff| {diff:.1e}")
    openi = _openi()
    images = [Image.open(p) for p in sorted(glob.glob(str(openi / "**" / "*.png"), recursive=True))] if openi else []
    sizes = sorted({im.size for im in images})
    texts = []
    if openi:
        with open(openi / "reports.csv", newline="", encoding="utf-8") as handle:
            texts = [r for r in (join_report(row["findings"], row["impression"]) for row in csv.DictReader(handle))
                     if r.strip()]
    if images:
        pixels = processor(images=images)["pixel_values"]
        ref_pixels = torch.stack([preprocess(to_rgb(im)) for im in images])
        print(f"pixels: {len(images)} real OpenI images, sizes {sizes}: max |diff| "
              f"{(pixels - ref_pixels).abs().max().item():.1e}")
    if texts:
        timer = time.time()
        mismatches = 0
        for start in range(0, len(texts), 500):
            chunk = texts[start:start + 500]
            ours = processor(text=chunk)["input_ids"]
            ref = tokenizer(chunk)[:, : ours.shape[1]]
            mismatches += int((ours != ref).any(dim=1).sum())
        print(f"token ids: {len(texts)} real reports, {mismatches} differ ({time.time() - timer:.1f} s)")
    if images and texts:
        timer = time.time()
        batch = processor(images=images, text=texts[:32])
        with torch.no_grad():
            ref_image = reference.encode_image(torch.stack([preprocess(to_rgb(im)) for im in images]), normalize=True)
            ref_text = reference.encode_text(tokenizer(texts[:32]), normalize=True)
            image = model.get_image_features(batch["pixel_values"])
            text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        print(f"normalised embeddings ({len(images)} images, 32 reports): image max |diff| "
              f"{(image - ref_image).abs().max().item():.1e}, text max |diff| {(text - ref_text).abs().max().item():.1e} "
              f"({time.time() - timer:.1f} s)")


def cmd_verify(args: argparse.Namespace) -> int:
    from cxr_mtclip.testing import hub as sim

    hub = sim.load_simulated_hub(args.cache_dir)
    print(f"simulated hub: {hub.variant} variant in {hub.cache_dir}; vocabulary {hub.vocab_size} entries "
          f"({hub.texts_source}); CLIP baseline {hub.clip_model} {hub.clip_pretrained or ''}")
    _print_cache(hub.cache_dir)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    if not args.skip_figures:
        _equivalence_figures(hub)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", *HUB_TESTS]
    env = {**os.environ, sim.HUB_ENV: str(Path(args.cache_dir).resolve()),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    print("$ " + " ".join(command[1:]) + f"   ({sim.HUB_ENV}={env[sim.HUB_ENV]})", flush=True)
    return subprocess.call(command, cwd=REPO_ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write a simulated hub cache")
    write.add_argument("--cache_dir", type=Path, required=True)
    write.add_argument("--variant", choices=["full", "tiny"], default="full")
    write.add_argument("--openi", type=Path, default=None, help="folder with reports.csv for the vocabulary")
    write.add_argument("--no_clip", action="store_true", help="skip the CLIP baseline repo")
    write.add_argument("--seed", type=int, default=0)
    write.set_defaults(run=cmd_write)
    verify = sub.add_parser("verify", help="equivalence figures and the hub tests against a written cache")
    verify.add_argument("--cache_dir", type=Path, required=True)
    verify.add_argument("--skip_figures", action="store_true")
    verify.set_defaults(run=cmd_verify)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
