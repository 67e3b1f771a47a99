"""The index folder: built once from phantoms, loaded in a fresh process, searched without embedding the gallery.

Results are compared with a brute-force NumPy search over the rows' own embedding columns; every damaged or
mismatched folder gives one clear line; `add` appends studies (flat, HNSW, IVF) and updates the folder
atomically; gallery and queries are embedded in one precision; interactive search defaults to cross-modal.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value

from cxr_mtclip import CxrMtClipModel, CxrMtClipProcessor
from cxr_mtclip.data import make_phantom_openi
from cxr_mtclip.retrieval import (
    EMBEDDING_COLUMNS,
    FINGERPRINT_COLUMN,
    RetrievalIndex,
    build_index,
    embed_dataset,
    embed_images,
    embed_reports,
    model_fingerprint,
    search_by_image,
    search_by_text,
)
from cxr_mtclip.retrieval.store import MANIFEST_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_openi(36, seed=3, image_size=64)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, phantoms):
    """A tiny model and processor, saved (a fresh process loads them from here), and loaded back."""
    from cxr_mtclip import CxrMtClipConfig, build_wordpiece_tokenizer

    folder = tmp_path_factory.mktemp("model")
    tokenizer = build_wordpiece_tokenizer(phantoms["report"], folder / "tok", vocab_size=300)
    config = CxrMtClipConfig.from_registry("demo", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = CxrMtClipModel(config).eval()
    model.save_pretrained(folder)
    CxrMtClipProcessor.from_config(config, tokenizer).save_pretrained(folder)
    return folder, CxrMtClipModel.from_pretrained(folder).eval(), CxrMtClipProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory, phantoms, saved_model):
    _, model, processor = saved_model
    folder = tmp_path_factory.mktemp("idx") / "phantoms"
    RetrievalIndex.build(model, processor, phantoms.select(range(30)), kind="flat", show_progress=False).save(
        folder, show_progress=False)
    return folder


class ForwardCounter:
    """Counts the rows the model's towers embed (patched on the class: covers models loaded later too)."""

    def __init__(self, monkeypatch):
        self.images = self.reports = 0
        image_fn, text_fn = CxrMtClipModel.get_image_features, CxrMtClipModel.get_text_features

        def count_image(model, pixel_values, *args, **kwargs):
            self.images += int(pixel_values.shape[0])
            return image_fn(model, pixel_values, *args, **kwargs)

        def count_text(model, input_ids, *args, **kwargs):
            self.reports += int(input_ids.shape[0])
            return text_fn(model, input_ids, *args, **kwargs)

        monkeypatch.setattr(CxrMtClipModel, "get_image_features", count_image)
        monkeypatch.setattr(CxrMtClipModel, "get_text_features", count_text)


def brute_force(rows: Dataset, column: str, query: np.ndarray, k: int, mask: np.ndarray | None = None):
    """Top-k (scores, row numbers) by NumPy over the non-None vectors of `column`."""
    vectors = rows[column]
    keep = [i for i, v in enumerate(vectors) if v is not None and (mask is None or mask[i])]
    matrix = np.asarray([vectors[i] for i in keep], dtype=np.float32)
    scores = matrix @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], np.asarray(keep)[order]


# -- build once, load in a fresh process, no forward pass over the gallery --------------------------------


def test_fresh_process_loads_and_searches_without_embedding_the_gallery(flat_folder, saved_model, phantoms, tmp_path):
    model_dir, model, processor = saved_model
    query_image = tmp_path / "query.png"
    phantoms[31]["image"].save(query_image)
    script = f"""
import json, sys
import numpy as np
from cxr_mtclip import CxrMtClipModel
import cxr_mtclip.retrieval.embedding as embedding
seen = {{"images": 0, "reports": 0}}
image_fn, text_fn = CxrMtClipModel.get_image_features, CxrMtClipModel.get_text_features
def count_image(self, pixel_values, *a, **k):
    seen["images"] += int(pixel_values.shape[0]); return image_fn(self, pixel_values, *a, **k)
def count_text(self, input_ids, *a, **k):
    seen["reports"] += int(input_ids.shape[0]); return text_fn(self, input_ids, *a, **k)
CxrMtClipModel.get_image_features, CxrMtClipModel.get_text_features = count_image, count_text
def refuse(*a, **k):
    raise AssertionError("embed_dataset ran: the gallery was embedded again")
embedding.embed_dataset = refuse
from cxr_mtclip.retrieval import RetrievalIndex
from cxr_mtclip.retrieval import retrieval_index
retrieval_index.embed_dataset = refuse
index = RetrievalIndex.load({str(flat_folder)!r}, model={str(model_dir)!r})
loaded = dict(seen)
text = index.search(text={phantoms[31]["report"]!r}, k=5)
image = index.search(image={str(query_image)!r}, k=5)
both = index.search(image={str(query_image)!r}, text={phantoms[31]["report"]!r}, k=5, mode="paper")
print(json.dumps({{"loaded": loaded, "after": seen, "rows": len(index.rows),
                  "text": [text.row_ids.tolist(), text.scores.tolist(), text.index_name, text.mode],
                  "image": [image.row_ids.tolist(), image.scores.tolist(), image.index_name],
                  "both": [both.row_ids.tolist(), both.index_name]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == {"images": 0, "reports": 0}  # loading embeds nothing
    assert out["after"] == {"images": 2, "reports": 2}  # only the queries (two image, two report queries)
    assert out["rows"] == 30
    assert out["text"][2:] == ["image_embeds", "cross-modal"] and out["image"][2] == "text_embeds"
    assert out["both"][1] == "fused_embeds"

    rows = RetrievalIndex.load(flat_folder).rows
    text_query = embed_reports(model, processor, phantoms[31]["report"])[0]
    scores, ids = brute_force(rows, "image_embeds", text_query, 5)
    assert out["text"][0] == ids.tolist()
    np.testing.assert_allclose(out["text"][1], scores, atol=1e-5)
    image_query = embed_images(model, processor, phantoms[31]["image"])[0]
    scores, ids = brute_force(rows, "text_embeds", image_query, 5)
    assert out["image"][0] == ids.tolist()
    np.testing.assert_allclose(out["image"][1], scores, atol=1e-5)


def test_every_mode_equals_brute_force(flat_folder, saved_model, phantoms, monkeypatch):
    _, model, processor = saved_model
    counter = ForwardCounter(monkeypatch)
    index = RetrievalIndex.load(flat_folder, model, processor)
    image, report = phantoms[32]["image"], phantoms[32]["report"]
    queries = {"image": embed_images(model, processor, image)[0], "text": embed_reports(model, processor, report)[0]}
    counter.images = counter.reports = 0
    for mode, kind, column in [("cross-modal", "image", "text_embeds"), ("cross-modal", "text", "image_embeds"),
                               ("paper", "image", "fused_embeds"), ("paper", "text", "fused_embeds")]:
        results = index.search(**({"image": image} if kind == "image" else {"text": report}), k=7, mode=mode)
        scores, ids = brute_force(index.rows, column, queries[kind], 7)
        assert results.index_name == column and results.row_ids.tolist() == ids.tolist()
        np.testing.assert_allclose(results.scores, scores, atol=1e-5)
        assert [r["uid"] for r in results.records] == [index.rows[int(i)]["uid"] for i in ids]
    assert (counter.images, counter.reports) == (2, 2)  # one forward pass per query, none over the gallery


# -- one clear error each ----------------------------------------------------------------------------------


def test_a_model_with_another_fingerprint_is_refused_in_one_line(flat_folder, saved_model, tiny_processor):
    from cxr_mtclip import CxrMtClipConfig

    torch.manual_seed(7)
    other = CxrMtClipModel(CxrMtClipConfig.from_registry("demo", vocab_size=saved_model[2].tokenizer.vocab_size))
    with pytest.raises(ValueError) as info:
        RetrievalIndex.load(flat_folder, other, saved_model[2])
    message = str(info.value)
    assert "\n" not in message and str(flat_folder) in message and "not with this model" in message


def unit_rows(n: int, dim: int = 8, seed: int = 0, scale: np.ndarray | None = None) -> Dataset:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if scale is not None:
        vectors *= scale[:, None]
    features = Features({"uid": Value("string"), "fused_embeds": List(Value("float32"), length=dim),
                         FINGERPRINT_COLUMN: Value("string")})
    return Dataset.from_dict({"uid": [f"u{i}" for i in range(n)], "fused_embeds": vectors.tolist(),
                              FINGERPRINT_COLUMN: ["sha256:vectors"] * n}, features=features)


def test_vectors_that_are_not_unit_length_are_refused(tmp_path, capsys):
    norms = np.ones(20, dtype=np.float32)
    norms[[3, 11]] = [0.5, 30.0]
    rows = unit_rows(20, scale=norms)
    with pytest.raises(ValueError, match=r"column 'fused_embeds': 2 vector\(s\) are not unit length .*0\.5\.\.30.*row\(s\) \[3, 11\]"):
        RetrievalIndex.build(None, None, rows, index_columns=["fused_embeds"], show_progress=False)
    with pytest.raises(ValueError, match="not unit length"):
        build_index(rows, "fused_embeds", "flat", show_progress=False)  # the datasets path refuses them too
    rows.save_to_disk(str(tmp_path / "emb"))
    from cxr_mtclip.cli import main

    capsys.readouterr()
    assert main(["index", "--dataset", str(tmp_path / "emb"), "--columns", "fused_embeds", "--out", str(tmp_path / "i")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in re.split(r"[\r\n]", err) if line.startswith("cxr-mtclip")]  # besides progress bars
    assert len(errors) == 1 and "not unit length" in errors[0] and "Traceback" not in err
    assert not (tmp_path / "i").exists()


def test_the_unit_norm_check_names_nan_infinite_and_overflowing_rows():
    from cxr_mtclip.retrieval.index import check_unit_norm

    vectors = np.eye(4, dtype=np.float32)
    check_unit_norm(vectors)
    for row, value, message in [(2, np.nan, r"NaN or infinite values in row\(s\) \[12\]"),
                                (3, -np.inf, r"NaN or infinite values in row\(s\) \[13\]"),
                                (1, 1e30, r"1 vector\(s\) are not unit length \(L2 norms inf\.\.inf, first at row\(s\) \[11\]")]:
        bad = vectors.copy()
        bad[row, 1] = value
        with pytest.raises(ValueError, match=message):
            check_unit_norm(bad, first_row=10)


def test_truncated_or_replaced_index_file_is_named(tmp_path, flat_folder):
    folder = tmp_path / "copy"
    shutil.copytree(flat_folder, folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    target = folder / manifest["indexes"]["text_embeds"]["file"]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"text_embeds\.0001\.faiss: \d+ bytes but .*manifest\.json says \d+: the file is truncated"):
        RetrievalIndex.load(folder)
    # same size, other bytes: the size check passes, faiss' reader or the sha256 check names the file
    target.write_bytes(b"\0" * len(data))
    with pytest.raises(ValueError, match=r"text_embeds\.0001\.faiss: (not a readable FAISS index|sha256 differs)"):
        RetrievalIndex.load(folder, verify=True)


def test_a_manifest_from_another_index_folder_is_refused(tmp_path, flat_folder, saved_model, phantoms):
    _, model, processor = saved_model
    other = tmp_path / "other"
    RetrievalIndex.build(model, processor, phantoms.select(range(6, 36)), show_progress=False).save(other, show_progress=False)
    folder = tmp_path / "copy"
    shutil.copytree(flat_folder, folder)
    shutil.copy(other / MANIFEST_NAME, folder / MANIFEST_NAME)  # both hold 30 rows of the same model
    with pytest.raises(ValueError, match=r"manifest\.json: describes other data: rows/part-00000 holds dataset \w+, the manifest expects \w+"):
        RetrievalIndex.load(folder)
    (folder / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json: not valid JSON"):
        RetrievalIndex.load(folder)
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="not an index folder"):
        RetrievalIndex.load(folder)


# -- add ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_then_search_finds_the_new_study(tmp_path, saved_model, phantoms, kind):
    _, model, processor = saved_model
    params = {"nlist": 4, "nprobe": 1} if kind == "ivf" else {}  # one cell probed: the new vector sits in its own
    folder = tmp_path / "idx"
    RetrievalIndex.build(model, processor, phantoms.select(range(30)), kind=kind, show_progress=False, **params).save(
        folder, show_progress=False)
    index = RetrievalIndex.load(folder, model, processor)
    trained = index.indexes["fused_embeds"].index
    assert index.add(phantoms.select(range(30, 34)), show_progress=False) == 4
    assert index.indexes["fused_embeds"].index is trained  # appended, not rebuilt (IVF keeps its trained cells)
    fresh = RetrievalIndex.load(folder, model, processor)
    assert len(fresh.rows) == 34 and fresh.manifest.generation == 2 and len(fresh.manifest.rows) == 2
    for i in range(30, 34):
        hit = fresh.search(image=phantoms[i]["image"], text=phantoms[i]["report"], k=1)  # its own fused vector
        assert hit.records[0]["uid"] == phantoms[i]["uid"] and hit.scores[0] == pytest.approx(1.0, abs=1e-4)
    left = sorted(p.name for p in (folder / "indexes").iterdir())
    assert left == sorted(f"{c}.0002.faiss" for c in EMBEDDING_COLUMNS)  # the old generation is gone


def test_a_failed_add_leaves_the_folder_as_it_was(tmp_path, saved_model, phantoms, monkeypatch):
    import faiss

    _, model, processor = saved_model
    folder = tmp_path / "idx"
    RetrievalIndex.build(model, processor, phantoms.select(range(30)), show_progress=False).save(folder, show_progress=False)
    before = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    index = RetrievalIndex.load(folder, model, processor)
    calls = {"n": 0}
    real = faiss.write_index

    def fail_second(ix, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(ix, path)

    monkeypatch.setattr(faiss, "write_index", fail_second)
    with pytest.raises(OSError, match="disk full"):
        index.add(phantoms.select(range(30, 32)), show_progress=False)
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*")} == before
    assert len(RetrievalIndex.load(folder, model, processor).rows) == 30


# -- filters ---------------------------------------------------------------------------------------------------


def filter_rows(n: int, dim: int = 16, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    vectors = centres[rng.integers(0, 8, n)] + 0.4 * rng.standard_normal((n, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    findings = ["Cardiomegaly", "Pleural Effusion", "Nodule", "Atelectasis"]
    features = Features({
        "uid": Value("string"), "label": ClassLabel(names=["normal", "abnormal"]), "view": Value("string"),
        "finding_labels": List(ClassLabel(names=findings)), "fused_embeds": List(Value("float32"), length=dim),
        FINGERPRINT_COLUMN: Value("string"),
    })
    return Dataset.from_dict({
        "uid": [f"s{i}" for i in range(n)],
        "label": rng.integers(0, 2, n).tolist(),
        "view": rng.choice(["PA", "AP", "LATERAL"], n, p=[0.6, 0.35, 0.05]).tolist(),
        "finding_labels": [sorted(set(rng.integers(0, 4, rng.integers(0, 3)).tolist())) for _ in range(n)],
        "fused_embeds": vectors.tolist(), FINGERPRINT_COLUMN: ["sha256:vectors"] * n,
    }, features=features)


def expected_mask(rows: Dataset, filters: dict) -> np.ndarray:
    """The filters' meaning, row by row in Python (the reference for pyarrow's vectorised version)."""
    names = rows.features["finding_labels"].feature.names
    mask = []
    for row in rows.remove_columns("fused_embeds"):
        ok = True
        for column, wanted in filters.items():
            value = row[column]
            if column == "label":
                ok &= ["normal", "abnormal"][value] in ([wanted] if isinstance(wanted, str) else wanted)
            elif column == "finding_labels":
                held = {names[v] for v in value}
                if isinstance(wanted, dict) and "all" in wanted:
                    ok &= set(wanted["all"]) <= held
                elif isinstance(wanted, dict) and "not" in wanted:
                    ok &= not (set(wanted["not"]) & held)
                else:
                    ok &= bool({wanted} & held)
            else:
                ok &= value in ([wanted] if isinstance(wanted, str) else wanted)
        mask.append(ok)
    return np.asarray(mask)


FILTERS = [
    {"label": "abnormal"},
    {"view": ["PA", "AP"], "label": "normal"},
    {"finding_labels": "Cardiomegaly"},
    {"finding_labels": {"all": ["Cardiomegaly", "Nodule"]}, "label": "abnormal"},
    {"finding_labels": {"not": ["Pleural Effusion"]}},
    {"view": "LATERAL", "label": "abnormal"},  # few rows: fewer than k may pass
]


@pytest.fixture(scope="module")
def filter_case():
    rows = filter_rows(1500)
    matrix = np.asarray(rows["fused_embeds"], dtype=np.float32)
    masks = [expected_mask(rows, filters) for filters in FILTERS]
    return rows, matrix, masks, np.asarray(filter_rows(8, seed=1)["fused_embeds"], dtype=np.float32)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("exact_below", [0, 4096], ids=["faiss-selector", "exact-small-subsets"])
def test_filters_return_k_matching_rows_like_brute_force(kind, exact_below, monkeypatch, filter_case):
    import cxr_mtclip.retrieval.filters as filters_module

    monkeypatch.setattr(filters_module, "EXACT_SEARCH_ROWS", exact_below)
    rows, matrix, masks, queries = filter_case
    index = RetrievalIndex.build(None, None, rows, kind=kind, index_columns=["fused_embeds"], show_progress=False,
                                 **({"nlist": 16, "nprobe": 4} if kind == "ivf" else {"ef_search": 16} if kind == "hnsw" else {}))
    k = 10
    for filters, mask in zip(FILTERS, masks):
        recall = []
        for query in queries:
            results = index.search(query_embeds=query, index_name="fused_embeds", k=k, filters=filters)
            allowed = np.flatnonzero(mask)
            scores = matrix[allowed] @ query
            order = np.argsort(-scores, kind="stable")[:k]
            ids, scores = allowed[order], scores[order]
            assert len(results) == min(k, int(mask.sum())), filters
            assert mask[results.row_ids].all(), filters
            assert results.num_candidates == int(mask.sum())
            if kind == "flat" or exact_below:
                assert results.row_ids.tolist() == ids.tolist()
                np.testing.assert_allclose(results.scores, scores, atol=1e-5)
            recall.append(len(set(results.row_ids) & set(ids)) / len(ids))
        assert np.mean(recall) >= 0.7, (filters, np.mean(recall))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_an_unfiltered_search_returns_k_rows_even_past_the_approximate_beam(kind):
    """k larger than an HNSW beam (efSearch) or an IVF probe can reach: faiss pads with -1 and the search used to
    return fewer rows, saying "only N rows match" (newcomer report, session 3). Now the whole gallery, exactly."""
    rows = filter_rows(300, seed=3)
    matrix = np.asarray(rows["fused_embeds"], dtype=np.float32)
    index = RetrievalIndex.build(None, None, rows, kind=kind, index_columns=["fused_embeds"], show_progress=False,
                                 **({"nlist": 16, "nprobe": 1} if kind == "ivf" else {"ef_search": 16}))
    query = matrix[7]
    raw_scores, raw_ids = index.indexes["fused_embeds"].index.search(query[None], 300)
    assert (raw_ids[0] < 0).any()  # the bare faiss index cannot reach every row with these settings
    results = index.search(query_embeds=query, index_name="fused_embeds", k=300)
    assert len(results) == 300 and results.num_candidates == 300
    order = np.argsort(-(matrix @ query), kind="stable")
    np.testing.assert_allclose(results.scores, (matrix @ query)[order], atol=1e-5)
    small = index.search(query_embeds=query, index_name="fused_embeds", k=5)  # within reach: the index answers
    assert len(small) == 5 and small.row_ids[0] == 7


def test_bad_filters_are_named():
    rows = filter_rows(50)
    index = RetrievalIndex.build(None, None, rows, index_columns=["fused_embeds"], show_progress=False)
    query = rows[0]["fused_embeds"]
    for filters, message in [
        ({"sex": "F"}, r"cannot filter on 'sex': filterable columns are \['uid', 'label', 'view', 'finding_labels'\]"),
        ({"label": "sick"}, r"unknown label 'sick'; expected one of \['normal', 'abnormal'\]"),
        ({"view": []}, "an empty list of values matches nothing"),
        ({"fused_embeds": 1}, "cannot filter on 'fused_embeds'"),
        ({"finding_labels": {"most": ["Nodule"]}}, r"one of \{'any'\|'all'\|'not'"),
    ]:
        with pytest.raises(ValueError, match=message):
            index.search(query_embeds=query, index_name="fused_embeds", filters=filters)


# -- precision and defaults (issue 15, findings 8 and 9) --------------------------------------------------------


def test_float32_and_bf16_autocast_embeddings_agree(saved_model, phantoms):
    """The documented tolerance between the CPU float32 path and the bf16 autocast path (CUDA's default)."""
    _, model, processor = saved_model
    images, reports = phantoms["image"][:8], phantoms["report"][:8]
    for embed, inputs in ((embed_images, images), (embed_reports, reports)):
        full = embed(model, processor, inputs, precision="float32")
        half = embed(model, processor, inputs, precision="bfloat16")
        assert not np.array_equal(full, half)  # the autocast path really ran in bf16
        assert (full * half).sum(axis=1).min() >= 0.999
        assert np.abs(full - half).max() <= 0.02


def test_gallery_and_queries_use_one_precision(saved_model, phantoms, monkeypatch, tmp_path):
    from cxr_mtclip.retrieval import embedding

    _, model, processor = saved_model
    seen = []
    real = embedding.embedding_autocast

    def spy(device, dtype=torch.float32, precision="auto"):
        seen.append(precision)
        return real(device, dtype, precision)

    monkeypatch.setattr(embedding, "embedding_autocast", spy)
    index = RetrievalIndex.build(model, processor, phantoms.select(range(8)), precision="bfloat16", show_progress=False)
    assert index.manifest.precision == "bfloat16" and set(seen) == {"bfloat16"}
    index.save(tmp_path / "idx", show_progress=False)
    seen.clear()
    RetrievalIndex.load(tmp_path / "idx", model, processor).search(image=phantoms[0]["image"], text=phantoms[0]["report"])
    assert seen == ["bfloat16", "bfloat16"]  # the image and the report query, as the gallery was embedded


def test_interactive_search_defaults_to_cross_modal(saved_model, phantoms, flat_folder):
    _, model, processor = saved_model
    embedded = embed_dataset(model, processor, phantoms.select(range(12)), show_progress=False)
    for column in EMBEDDING_COLUMNS:
        build_index(embedded, column, show_progress=False)
    default = search_by_image(model, processor, embedded, phantoms[0]["image"], k=3)
    cross = search_by_image(model, processor, embedded, phantoms[0]["image"], k=3, mode="cross-modal")
    paper = search_by_image(model, processor, embedded, phantoms[0]["image"], k=3, mode="paper")
    np.testing.assert_array_equal(default.scores, cross.scores)  # image -> reports: the text_embeds index
    assert not np.allclose(default.scores, paper.scores)
    assert search_by_text(model, processor, embedded, "effusion", k=2).examples["uid"] == \
        search_by_text(model, processor, embedded, "effusion", k=2, mode="cross-modal").examples["uid"]
    index = RetrievalIndex.load(flat_folder, model, processor)
    assert index.search(text="effusion").mode == "cross-modal" and index.manifest.protocol == "cross-modal"
    assert model_fingerprint(model) == index.manifest.model_fingerprint
