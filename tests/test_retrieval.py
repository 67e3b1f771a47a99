"""cxr_mtclip.retrieval: embedding columns, FAISS indexes through `datasets`, save/load checks, search modes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from cxr_mtclip import CxrMtClipModel
from cxr_mtclip.retrieval import (
    EMBEDDING_COLUMNS,
    FINGERPRINT_COLUMN,
    RetrievalIndex,
    build_index,
    default_nlist,
    default_nprobe,
    describe_index,
    embed_dataset,
    embed_images,
    embed_reports,
    embedding_model_fingerprint,
    index_name_for,
    load_faiss_index,
    model_fingerprint,
    rows_with_embeddings,
    save_faiss_index,
    search_by_image,
    search_by_text,
    search_embeddings,
    search_similar_studies,
    set_search_params,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTS = [
    "the heart size is normal and the lungs are clear",
    "no acute cardiopulmonary disease",
    "cardiomegaly with small left pleural effusion",
    "right lower lobe consolidation",
    "mild pulmonary edema with bilateral pleural effusion",
    "calcified granuloma in the left upper lobe",
    "pacemaker in place stable cardiomegaly",
    "degenerative changes of the spine no acute disease",
]


def study_rows(n: int, seed: int = 0, *, no_image: tuple[int, ...] = (), size: int = 64) -> Dataset:
    """Small OpenI-shaped rows: label-dependent synthetic 64x64 images and short reports."""
    rng = np.random.default_rng(seed)
    images, reports, labels = [], [], []
    for i in range(n):
        label = i % 2
        y, x = np.mgrid[0:size, 0:size]
        blob = np.exp(-(((x - size * (0.3 + 0.4 * label)) ** 2 + (y - size / 2) ** 2) / (2 * (4 + i % 5) ** 2)))
        pixels = 60 + 150 * blob + rng.normal(0, 12, (size, size))
        images.append(None if i in no_image else Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L"))
        reports.append(REPORTS[(2 * (i // 2) + label) % len(REPORTS)] + f" {'left' if i % 3 else 'right'} base")
        labels.append(label)
    features = Features({
        "uid": Value("string"), "image": ImageFeature(), "findings": Value("string"), "impression": Value("string"),
        "report": Value("string"), "label": ClassLabel(names=["normal", "abnormal"]), "mesh": Value("string"),
        "view": Value("string"), "image_file": Value("string"), "source": Value("string"),
    })
    return Dataset.from_dict({
        "uid": [f"CXR{i}" for i in range(n)], "image": images, "findings": reports, "impression": [""] * n,
        "report": reports, "label": labels, "mesh": ["normal" if y == 0 else "Cardiomegaly" for y in labels],
        "view": ["PA"] * n, "image_file": [f"{i}.png" for i in range(n)], "source": ["synthetic"] * n,
    }, features=features)


def vector_rows(vectors: dict[str, np.ndarray], labels: np.ndarray | None = None) -> Dataset:
    """A dataset whose columns are the given (n, d) float32 arrays, plus uid and label."""
    n = next(iter(vectors.values())).shape[0]
    data: dict[str, object] = {"uid": [f"u{i}" for i in range(n)]}
    features: dict[str, object] = {"uid": Value("string")}
    for name, array in vectors.items():
        data[name] = array.astype(np.float32)
        features[name] = List(Value("float32"), length=array.shape[1])
    data["label"] = (np.arange(n) % 2 if labels is None else labels).tolist()
    features["label"] = Value("int64")
    return Dataset.from_dict(data, features=Features(features))


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int, noise: float = 0.35) -> np.ndarray:
    centres = unit(rng, clusters, d)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return CxrMtClipModel(tiny_config).eval()


# -- indexes on known vectors ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_identity_embeddings_return_each_pair_first(kind):
    rng = np.random.default_rng(0)
    same = unit(rng, 64, 16)
    ds = vector_rows({"image_embeds": same, "text_embeds": same.copy()})
    build_index(ds, "text_embeds", kind)
    scores, examples = ds.get_nearest_examples_batch("text_embeds", same, k=3)
    assert [found["uid"][0] for found in examples] == ds["uid"]
    np.testing.assert_allclose([s[0] for s in scores], 1.0, atol=1e-5)
    # a shuffled pairing no longer finds the pair first (chance is 1/64)
    shuffled = same[rng.permutation(64)]
    _, shuffled_examples = ds.get_nearest_examples_batch("text_embeds", shuffled, k=1)
    hits = np.mean([found["uid"][0] == uid for found, uid in zip(shuffled_examples, ds["uid"])])
    assert hits < 0.2


def test_flat_index_agrees_with_bruteforce_numpy():
    rng = np.random.default_rng(1)
    gallery, queries = unit(rng, 300, 24), unit(rng, 40, 24)
    ds = vector_rows({"fused_embeds": gallery})
    build_index(ds, "fused_embeds", "flat")
    scores, indices = ds.search_batch("fused_embeds", queries, k=10)
    brute = queries @ gallery.T
    expected = np.argsort(-brute, axis=1)[:, :10]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, axis=1), atol=1e-5)
    spec = describe_index(ds, "fused_embeds")
    assert (spec.kind, spec.dimension, spec.num_rows, spec.metric) == ("flat", 24, 300, "inner_product")


def _recall_at_10(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]))


def test_ivf_and_hnsw_recall_against_flat():
    rng = np.random.default_rng(2)
    gallery = clustered(rng, 3000, 32, clusters=60)
    queries = clustered(np.random.default_rng(3), 100, 32, clusters=60)
    ds = vector_rows({"fused_embeds": gallery})
    build_index(ds, "fused_embeds", "flat", index_name="flat")
    build_index(ds, "fused_embeds", "ivf", index_name="ivf", nlist=40, nprobe=4)
    build_index(ds, "fused_embeds", "hnsw", index_name="hnsw", hnsw_m=16, ef_search=64, ef_construction=64)
    _, exact = ds.search_batch("flat", queries, k=10)
    _, ivf = ds.search_batch("ivf", queries, k=10)
    _, hnsw = ds.search_batch("hnsw", queries, k=10)
    ivf_recall, hnsw_recall = _recall_at_10(ivf, exact), _recall_at_10(hnsw, exact)
    print(f"recall@10 vs flat: ivf(nlist=40, nprobe=4)={ivf_recall:.3f} hnsw(M=16, ef=64)={hnsw_recall:.3f}")
    assert ivf_recall > 0.6 and hnsw_recall > 0.9
    assert describe_index(ds, "ivf").params == {"nlist": 40, "nprobe": 4}
    assert describe_index(ds, "hnsw").params == {"hnsw_m": 16, "ef_search": 64, "ef_construction": 64}
    # visiting every IVF cell makes IVF-Flat exact
    set_search_params(ds, "ivf", nprobe=40)
    _, ivf_all = ds.search_batch("ivf", queries, k=10)
    assert _recall_at_10(ivf_all, exact) == 1.0
    with pytest.raises(ValueError, match="nprobe applies to IVF"):
        set_search_params(ds, "hnsw", nprobe=3)


def test_ivf_defaults_follow_the_row_count():
    assert default_nlist(24) == 1 and default_nlist(10_000) == 256 and default_nlist(1_000_000) == 4000
    assert default_nprobe(1) == 1 and default_nprobe(256) == 32
    rng = np.random.default_rng(4)
    ds = vector_rows({"fused_embeds": clustered(rng, 400, 16, clusters=8)})
    build_index(ds, "fused_embeds", "ivf")
    spec = describe_index(ds, "fused_embeds")
    assert spec.params == {"nlist": default_nlist(400), "nprobe": default_nprobe(default_nlist(400))}
    with pytest.raises(ValueError, match="nlist=500"):
        build_index(ds, "fused_embeds", "ivf", index_name="too_many", nlist=500)
    with pytest.raises(ValueError, match="kind must be one of"):
        build_index(ds, "fused_embeds", "lsh")


def test_build_index_rejects_rows_without_the_embedding():
    rng = np.random.default_rng(5)
    vectors = unit(rng, 6, 8)
    ds = Dataset.from_dict(
        {"uid": list("abcdef"), "image_embeds": [v.tolist() if i != 2 else None for i, v in enumerate(vectors)]},
        features=Features({"uid": Value("string"), "image_embeds": List(Value("float32"), length=8)}),
    )
    with pytest.raises(ValueError, match=r"None on 1 of 6 rows.*rows_with_embeddings"):
        build_index(ds, "image_embeds")
    kept = rows_with_embeddings(ds, "image_embeds")
    assert kept["uid"] == ["a", "b", "d", "e", "f"]
    build_index(kept, "image_embeds")
    _, examples = kept.get_nearest_examples("image_embeds", vectors[3], k=1)
    assert examples["uid"] == ["d"]


# -- save / load --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_then_load_gives_identical_results(tmp_path, kind):
    rng = np.random.default_rng(6)
    gallery, queries = clustered(rng, 500, 16, clusters=10), unit(rng, 20, 16)
    ds = vector_rows({"fused_embeds": gallery})
    ds.save_to_disk(str(tmp_path / "data"))  # datasets refuses to save a dataset with an index attached
    build_index(ds, "fused_embeds", kind, nlist=10, nprobe=3, ef_search=40)
    before = ds.search_batch("fused_embeds", queries, k=5)
    sidecar = save_faiss_index(ds, "fused_embeds", tmp_path / "fused.faiss", fingerprint="sha256:model-a")
    meta = json.loads(sidecar.read_text())
    assert sidecar.name == "fused.faiss.json"
    assert (meta["num_rows"], meta["dimension"], meta["column"], meta["kind"]) == (500, 16, "fused_embeds", kind)
    assert meta["model_fingerprint"] == "sha256:model-a"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    from datasets import load_from_disk

    reloaded = load_from_disk(str(tmp_path / "data"))
    spec = load_faiss_index(reloaded, "fused_embeds", tmp_path / "fused.faiss", fingerprint="sha256:model-a")
    assert spec.kind == kind and spec.params == describe_index(ds, "fused_embeds").params
    after = reloaded.search_batch("fused_embeds", queries, k=5)
    np.testing.assert_array_equal(after.total_indices, before.total_indices)
    np.testing.assert_array_equal(after.total_scores, before.total_scores)


def test_load_rejects_an_index_built_for_other_data(tmp_path):
    rng = np.random.default_rng(7)
    ds = vector_rows({"fused_embeds": unit(rng, 50, 16)})
    build_index(ds, "fused_embeds")
    path = tmp_path / "fused.faiss"
    save_faiss_index(ds, "fused_embeds", path, fingerprint="sha256:model-a")

    other_size = vector_rows({"fused_embeds": unit(rng, 49, 16)})
    with pytest.raises(ValueError, match=r"fused\.faiss: the index holds 50 rows but the dataset has 49"):
        load_faiss_index(other_size, "fused_embeds", path)
    other_dim = vector_rows({"fused_embeds": unit(rng, 50, 8)})
    with pytest.raises(ValueError, match=r"fused\.faiss: the index has dimension 16 but .* has dimension 8"):
        load_faiss_index(other_dim, "fused_embeds", path)
    same_shape = vector_rows({"fused_embeds": unit(rng, 50, 16)})
    with pytest.raises(ValueError, match=r"fused\.faiss: .*differs from the vectors the index was built on"):
        load_faiss_index(same_shape, "fused_embeds", path)
    with pytest.raises(ValueError, match=r"fused\.faiss: .*model sha256:model-a, not of the given model sha256:model-b"):
        load_faiss_index(ds, "fused_embeds", path, fingerprint="sha256:model-b")
    assert not same_shape.is_index_initialized("fused_embeds")
    load_faiss_index(ds, "fused_embeds", path, fingerprint="sha256:model-a")  # the right data loads


def test_load_compares_the_dataset_fingerprint_column_and_needs_the_sidecar(tmp_path):
    rng = np.random.default_rng(8)
    vectors = unit(rng, 30, 8)
    ds = vector_rows({"fused_embeds": vectors}).add_column(FINGERPRINT_COLUMN, ["sha256:model-a"] * 30)
    build_index(ds, "fused_embeds")
    path = tmp_path / "fused.faiss"
    save_faiss_index(ds, "fused_embeds", path)  # fingerprint taken from the column
    assert json.loads((tmp_path / "fused.faiss.json").read_text())["model_fingerprint"] == "sha256:model-a"
    relabelled = vector_rows({"fused_embeds": vectors}).add_column(FINGERPRINT_COLUMN, ["sha256:model-b"] * 30)
    with pytest.raises(ValueError, match=f"'{FINGERPRINT_COLUMN}' column says sha256:model-b"):
        load_faiss_index(relabelled, "fused_embeds", path, verify_column=False)
    with pytest.raises(ValueError, match="column says the embeddings come from sha256:model-a"):
        save_faiss_index(ds, "fused_embeds", tmp_path / "x.faiss", fingerprint="sha256:model-z")
    (tmp_path / "fused.faiss.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"fused\.faiss\.json: missing"):
        load_faiss_index(ds, "fused_embeds", path)


def test_query_dimension_and_missing_index_errors():
    rng = np.random.default_rng(9)
    ds = vector_rows({"fused_embeds": unit(rng, 20, 16)})
    build_index(ds, "fused_embeds")
    with pytest.raises(ValueError, match=r"shape \(8,\) but index 'fused_embeds' holds 16-d vectors"):
        search_embeddings(ds, "fused_embeds", np.ones(8, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(3, 8\)"):
        search_embeddings(ds, "fused_embeds", np.ones((3, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="no index named 'text_embeds'"):
        search_embeddings(ds, "text_embeds", np.ones(16, dtype=np.float32))
    scores, examples = search_embeddings(ds, "fused_embeds", unit(rng, 1, 16)[0], k=50)  # k capped at the row count
    assert len(scores) == 20 and len(examples["uid"]) == 20


def test_index_name_for_each_mode():
    assert index_name_for("image", "paper") == index_name_for("text", "paper") == "fused_embeds"
    assert index_name_for("image", "cross-modal") == "text_embeds"
    assert index_name_for("text", "cross-modal") == "image_embeds"
    assert index_name_for("study", "cross-modal") == "fused_embeds"
    with pytest.raises(ValueError, match="mode must be one of"):
        index_name_for("image", "both")


# -- embedding with a model -----------------------------------------------------------------------


def test_embed_dataset_equals_direct_model_calls(tiny_model, tiny_processor):
    ds = study_rows(7)
    tiny_model.train()
    out = embed_dataset(tiny_model, tiny_processor, ds, batch_size=3, show_progress=False,
                        columns=(*EMBEDDING_COLUMNS, "logits"))
    assert tiny_model.training  # the caller's mode is restored
    tiny_model.eval()
    batch = tiny_processor(images=ds["image"], text=ds["report"])
    with torch.no_grad():
        direct = tiny_model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"])
        fused = tiny_model.get_fused_features(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    for column, expected in (("image_embeds", direct.image_embeds), ("text_embeds", direct.text_embeds),
                             ("fused_embeds", fused)):
        assert out.features[column] == List(Value("float32"), length=tiny_model.config.embed_dim)
        values = np.asarray(out[column], dtype=np.float32)
        np.testing.assert_allclose(values, expected.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["logits"], direct.logits.numpy(), atol=1e-5)
    assert out[FINGERPRINT_COLUMN] == [model_fingerprint(tiny_model)] * 7
    assert embedding_model_fingerprint(out) == model_fingerprint(tiny_model)
    assert out["uid"] == ds["uid"]
    one_by_one = embed_dataset(tiny_model, tiny_processor, ds, batch_size=1, show_progress=False)
    np.testing.assert_allclose(np.asarray(one_by_one["fused_embeds"]), np.asarray(out["fused_embeds"]), atol=1e-5)


def test_embed_dataset_reports_only_rows(tiny_model, tiny_processor):
    mixed = embed_dataset(tiny_model, tiny_processor, study_rows(6, no_image=(1, 4)), show_progress=False)
    assert [v is None for v in mixed["image_embeds"]] == [False, True, False, False, True, False]
    assert [v is None for v in mixed["fused_embeds"]] == [False, True, False, False, True, False]
    assert all(v is not None for v in mixed["text_embeds"])
    assert len(rows_with_embeddings(mixed, "fused_embeds")) == 4
    with pytest.raises(ValueError, match="None on 2 of 6 rows"):
        build_index(mixed, "fused_embeds")

    reports_only = embed_dataset(tiny_model, tiny_processor, study_rows(4, no_image=(0, 1, 2, 3)), show_progress=False)
    assert "text_embeds" in reports_only.column_names
    assert "image_embeds" not in reports_only.column_names and "fused_embeds" not in reports_only.column_names
    no_image_column = embed_dataset(tiny_model, tiny_processor, study_rows(3).remove_columns("image"), show_progress=False)
    assert "text_embeds" in no_image_column.column_names and "fused_embeds" not in no_image_column.column_names
    with pytest.raises(ValueError, match="columns="):
        embed_dataset(tiny_model, tiny_processor, study_rows(2), columns=("pixel_embeds",))


def test_embed_dataset_fails_loudly_on_non_finite_embeddings(tiny_model, tiny_processor, monkeypatch):
    real = tiny_model.get_image_features

    def broken(pixel_values, normalize=True):
        out = real(pixel_values, normalize=normalize).clone()
        out[1] = float("nan")
        return out

    monkeypatch.setattr(tiny_model, "get_image_features", broken)
    with pytest.raises(ValueError, match=r"NaN or infinite image embeddings for row\(s\) \[1\]"):
        embed_dataset(tiny_model, tiny_processor, study_rows(6), batch_size=3, show_progress=False)


def test_model_fingerprint_survives_save_load_and_tracks_weights(tiny_model, tmp_path):
    before = model_fingerprint(tiny_model)
    tiny_model.save_pretrained(tmp_path / "model")
    reloaded = CxrMtClipModel.from_pretrained(tmp_path / "model")
    assert model_fingerprint(reloaded) == before
    with torch.no_grad():
        reloaded.classifier.bias.add_(1e-3)
    assert model_fingerprint(reloaded) != before


def _indexed(tiny_model, tiny_processor, n=10):
    ds = rows_with_embeddings(embed_dataset(tiny_model, tiny_processor, study_rows(n), show_progress=False))
    for column in EMBEDDING_COLUMNS:
        build_index(ds, column)
    return ds


def test_search_modes_query_the_right_index(tiny_model, tiny_processor):
    rows = study_rows(10)
    ds = _indexed(tiny_model, tiny_processor)
    columns = {c: np.asarray(ds[c], dtype=np.float32) for c in EMBEDDING_COLUMNS}
    image_query = embed_images(tiny_model, tiny_processor, rows[3]["image"])[0]
    text_query = embed_reports(tiny_model, tiny_processor, rows[3]["report"])[0]

    def top(column, query, k=4):
        return np.sort(columns[column] @ query)[::-1][:k]

    paper, _ = search_by_image(tiny_model, tiny_processor, ds, rows[3]["image"], k=4, mode="paper")
    cross, _ = search_by_image(tiny_model, tiny_processor, ds, rows[3]["image"], k=4, mode="cross-modal")
    np.testing.assert_allclose(paper, top("fused_embeds", image_query), atol=1e-5)
    np.testing.assert_allclose(cross, top("text_embeds", image_query), atol=1e-5)
    assert not np.allclose(paper, cross, atol=1e-3)  # the two indexes really differ
    paper_t, _ = search_by_text(tiny_model, tiny_processor, ds, rows[3]["report"], k=4, mode="paper")
    cross_t, _ = search_by_text(tiny_model, tiny_processor, ds, rows[3]["report"], k=4, mode="cross-modal")
    np.testing.assert_allclose(paper_t, top("fused_embeds", text_query), atol=1e-5)
    np.testing.assert_allclose(cross_t, top("image_embeds", text_query), atol=1e-5)
    similar, examples = search_similar_studies(tiny_model, tiny_processor, ds, rows[3]["image"], rows[3]["report"], k=4)
    assert examples["uid"][0] == "CXR3"  # a study's own fused vector is its nearest
    np.testing.assert_allclose(similar[0], 1.0, atol=1e-5)
    # batches give one result per query, equal to the single-query results
    batch_scores, batch_examples = search_by_image(tiny_model, tiny_processor, ds, [rows[3]["image"], rows[5]["image"]],
                                                   k=4, mode="cross-modal")
    assert len(batch_scores) == 2 and len(batch_examples) == 2
    np.testing.assert_allclose(batch_scores[0], cross, atol=1e-5)


def test_search_without_the_mode_index_is_a_clear_error(tiny_model, tiny_processor):
    ds = rows_with_embeddings(embed_dataset(tiny_model, tiny_processor, study_rows(6), show_progress=False))
    build_index(ds, "fused_embeds")
    image = study_rows(1)[0]["image"]
    with pytest.raises(ValueError, match="image queries in mode 'cross-modal' search the index 'text_embeds'"):
        search_by_image(tiny_model, tiny_processor, ds, image, mode="cross-modal")
    with pytest.raises(ValueError, match="one image with one report"):
        search_similar_studies(tiny_model, tiny_processor, ds, image, ["a", "b"])


def test_retrieval_index_save_and_load(tiny_model, tiny_processor, tiny_config, tmp_path):
    rows = study_rows(9, no_image=(4,))
    retriever = RetrievalIndex.build(tiny_model, tiny_processor, rows, kind="hnsw", show_progress=False)
    assert sorted(retriever.index_names) == sorted(EMBEDDING_COLUMNS)
    # the reports-only study is in the text index only (image -> reports can find it), not in the other two
    assert len(retriever.dataset) == 9
    assert retriever.indexes["text_embeds"].index.ntotal == 9
    assert retriever.indexes["image_embeds"].index.ntotal == retriever.indexes["fused_embeds"].index.ntotal == 8
    query = rows[2]["image"]
    before = retriever.search_by_image(query, k=9, mode="cross-modal")
    assert "CXR4" in before.examples["uid"]
    assert "CXR4" not in retriever.search_by_text(rows[2]["report"], k=9).examples["uid"]
    retriever.save(tmp_path / "index", show_progress=False)
    assert sorted(p.name for p in (tmp_path / "index" / "indexes").glob("*.faiss")) == sorted(
        f"{c}.0001.faiss" for c in EMBEDDING_COLUMNS)

    fresh = RetrievalIndex.load(tmp_path / "index", tiny_model, tiny_processor)
    assert {meta["kind"] for meta in fresh.manifest.indexes.values()} == {"hnsw"}
    after = fresh.search_by_image(query, k=9, mode="cross-modal")
    np.testing.assert_array_equal(after.scores, before.scores)
    assert after.examples["uid"] == before.examples["uid"]

    torch.manual_seed(1)
    other_model = CxrMtClipModel(tiny_config).eval()
    with pytest.raises(ValueError, match="not with this model"):
        RetrievalIndex.load(tmp_path / "index", other_model, tiny_processor)


# -- examples -------------------------------------------------------------------------------------


def _load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_and_search_example_builds_then_loads(tmp_path, tiny_tokenizer_dir, capsys):
    from datasets import DatasetDict

    DatasetDict({"test": study_rows(8)}).save_to_disk(str(tmp_path / "data"))
    example = _load_example("index_and_search")
    argv = ["--dataset", str(tmp_path / "data"), "--model", "tiny", "--tokenizer", str(tiny_tokenizer_dir),
            "--index-dir", str(tmp_path / "idx"), "--k", "3", "--query-row", "2"]
    first = example.main(argv)
    printed = capsys.readouterr().out
    assert "built and saved indexes" in printed and "CXR2 *" in printed
    assert len(first) == 5 and all(len(hits) == 3 for hits in first.values())
    assert first["study -> similar studies (fused vs fused)"][0]["uid"] == "CXR2"
    second = example.main(argv)
    assert "loaded saved indexes" in capsys.readouterr().out
    assert second == first


# -- several processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_embed_dataset_across_two_processes_matches_one(tmp_path, tiny_tokenizer_dir):
    """Two CPU processes (torchrun, gloo) each embed a contiguous shard; every rank gets all rows in order."""
    script = tmp_path / "embed_two.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        import numpy as np, torch
        from accelerate import Accelerator
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_retrieval import study_rows
        from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor
        from cxr_mtclip.retrieval import embed_dataset
        accelerator = Accelerator(cpu=True)
        config = CxrMtClipConfig.tiny(dropout=0.0)
        torch.manual_seed(0)
        model = CxrMtClipModel(config)
        processor = CxrMtClipProcessor.from_config(config, {str(tiny_tokenizer_dir)!r})
        rows = study_rows(11, no_image=(2,))
        columns = ("image_embeds", "text_embeds", "fused_embeds", "logits")
        sharded = embed_dataset(accelerator.prepare(model), processor, rows, batch_size=2, accelerator=accelerator,
                                columns=columns, show_progress=False)
        single = embed_dataset(model, processor, rows, batch_size=4, columns=columns, show_progress=False)
        same = all(
            all((a is None and b is None) or np.allclose(a, b, atol=1e-5) for a, b in zip(sharded[c], single[c]))
            for c in columns
        )
        print(json.dumps({{"rank": accelerator.process_index, "world": accelerator.num_processes,
                          "rows": len(sharded), "same": bool(same), "uids": sharded["uid"] == rows["uid"]}}))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # the two ranks print concurrently: their JSON objects may share a line
    reports = [json.loads(obj) for obj in re.findall(r"\{[^{}]*\}", done.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world"] == 2 and r["rows"] == 11 and r["same"] and r["uids"] for r in reports)


# -- real OpenI copy (read from ../shared/openi, never copied) ------------------------------------


@pytest.mark.openi
def test_real_openi_reports_only_rows_get_text_embeddings_only(openi_dir, tiny_model, tiny_processor):
    from datasets import concatenate_datasets

    from cxr_mtclip.data import load_openi

    splits = load_openi(openi_dir, reports_only=True, show_progress=False, test_per_class=2)
    rows = concatenate_datasets(list(splits.values()))
    has_image = rows.with_format("arrow", columns=["image"])[:]["image"].is_valid().to_pylist()
    with_image = [i for i, present in enumerate(has_image) if present]
    sample = rows.select(sorted(set(with_image) | set(range(60))))  # every study with an image + some reports-only
    embedded = embed_dataset(tiny_model, tiny_processor, sample, show_progress=False)
    assert all(v is not None for v in embedded["text_embeds"])
    assert sum(v is not None for v in embedded["fused_embeds"]) == len(with_image) > 0
    # the index keeps the reports-only rows in the text index and leaves them out of the image and fused ones
    retriever = RetrievalIndex.build(tiny_model, tiny_processor, embedded, show_progress=False)
    assert retriever.indexes["fused_embeds"].index.ntotal == retriever.indexes["image_embeds"].index.ntotal == len(with_image)
    assert retriever.indexes["text_embeds"].index.ntotal == len(embedded)
    indexed = rows_with_embeddings(embedded, "image_embeds", "fused_embeds")
    scores, examples = retriever.search_similar_studies(indexed[0]["image"], indexed[0]["report"], k=len(with_image))
    assert examples["uid"][0] == indexed[0]["uid"] and len(scores) == len(with_image)


def test_embed_dataset_with_dataloader_workers_matches_the_serial_path(tiny_config, tiny_processor):
    import datasets as hf_datasets
    from PIL import Image as PILImage

    from cxr_mtclip import CxrMtClipModel
    from cxr_mtclip.retrieval import embed_dataset

    torch.manual_seed(0)
    model = CxrMtClipModel(tiny_config)
    rows = {
        "image": [PILImage.new("L", (64, 64), 30 * i) for i in range(7)],
        "report": [f"heart size normal {'left ' * i}effusion" for i in range(7)],
        "label": [i % 2 for i in range(7)],
    }
    data = hf_datasets.Dataset.from_dict(rows).cast_column("image", hf_datasets.Image())
    serial = embed_dataset(model, tiny_processor, data, batch_size=3, show_progress=False)
    workers = embed_dataset(model, tiny_processor, data, batch_size=3, show_progress=False, num_workers=2)
    for column in ("image_embeds", "text_embeds", "fused_embeds"):
        assert np.allclose(np.asarray(serial[column]), np.asarray(workers[column]), atol=1e-6)


def test_corrupt_image_and_corrupt_index_are_named(tmp_path, tiny_config, tiny_processor):
    import datasets as hf_datasets

    from cxr_mtclip import CxrMtClipModel
    from cxr_mtclip.retrieval import build_index, embed_dataset, load_faiss_index, save_faiss_index

    torch.manual_seed(0)
    model = CxrMtClipModel(tiny_config)
    good = tmp_path / "good.png"
    Image.new("L", (64, 64), 90).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    data = hf_datasets.Dataset.from_dict({"image": [str(good), str(bad)], "report": ["heart normal", "left effusion"],
                                          "label": [0, 1]}).cast_column("image", hf_datasets.Image())
    with pytest.raises(ValueError, match=r"row 1: image \(.*bad.png\) is unreadable"):
        embed_dataset(model, tiny_processor, data, show_progress=False)
    embedded = embed_dataset(model, tiny_processor, data.select([0, 0, 0]), show_progress=False)
    build_index(embedded, "fused_embeds", "flat", show_progress=False)
    path = tmp_path / "fused.faiss"
    save_faiss_index(embedded, "fused_embeds", path)
    path.write_bytes(path.read_bytes()[:20])
    embedded.drop_index("fused_embeds")
    with pytest.raises(ValueError, match="fused.faiss: not a readable FAISS index"):
        load_faiss_index(embedded, "fused_embeds", path, verify_column=False)
