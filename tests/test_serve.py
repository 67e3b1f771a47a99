"""The search page: unit checks over HTTP, then a real headless Chromium driving upload and text search."""

import http.client
import io
import shutil
import threading
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image

from cxr_mtclip.retrieval.serve import SearchHit, UserInputError, decode_upload, make_server, parse_multipart, thumbnail_png

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def multipart(fields):
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, (filename, data) in fields.items():
        body.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body.write(f"Content-Disposition: {disposition}\r\n\r\n".encode())
        body.write(data if isinstance(data, bytes) else data.encode())
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", body.getvalue()


def png_bytes(size=(40, 30), value=128):
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fake_server():
    calls = []

    def search_image(image, k, mode):
        calls.append(("image", image.size, k, mode))
        return [SearchHit(f"u{i}", "abnormal" if i % 2 else "normal", 1.0 - i / 10, f"report {i}", thumbnail_png(image), "synthetic") for i in range(k)]

    def search_text(text, k, mode):
        calls.append(("text", text, k, mode))
        if text == "boom":
            raise RuntimeError("internal details that must not leak")
        return [SearchHit("u9", "normal", 0.5, "matched " + text, None, "synthetic")]

    server = make_server(search_image, search_text, data_note="SYNTHETIC phantoms", max_upload_bytes=50_000)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, calls
    server.shutdown()
    server.server_close()


def post(server, fields=None, raw=None, content_type=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    if raw is None:
        content_type, raw = multipart(fields)
    conn.request("POST", "/search", body=raw, headers={"Content-Type": content_type})
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_binds_loopback_by_default(fake_server):
    server, _ = fake_server
    assert server.server_address[0] == "127.0.0.1"


def test_form_page_and_text_search(fake_server):
    server, calls = fake_server
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/")
    page = conn.getresponse().read().decode()
    assert "search-form" in page and "SYNTHETIC phantoms" in page
    status, page = post(server, {"report": (None, "small left effusion"), "mode": (None, "cross-modal"), "k": (None, "3")})
    assert status == 200 and "matched small left effusion" in page
    assert calls[-1] == ("text", "small left effusion", 3, "cross-modal")


def test_image_upload(fake_server):
    server, calls = fake_server
    status, page = post(server, {"image": ("x.png", png_bytes()), "mode": (None, "paper"), "k": (None, "2")})
    assert status == 200 and page.count("class='hit'") == 2 and "data:image/png;base64" in page
    assert calls[-1] == ("image", (40, 30), 2, "paper")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"image": ("notes.txt", b"this is not an image")}, "not a readable image"),
        ({"image": ("empty.png", b"")}, "the file is empty"),
        ({"report": (None, "")}, "Upload a chest X-ray or type a report"),
        ({"report": (None, "x"), "mode": (None, "fancy")}, "unknown mode"),
        ({"report": (None, "x"), "k": (None, "500")}, "top-k must be between 1 and 50"),
    ],
)
def test_bad_input_shows_a_message(fake_server, fields, message):
    server, _ = fake_server
    status, page = post(server, fields)
    assert status == 400 and message in page and "Traceback" not in page


def test_oversized_upload_is_refused(fake_server):
    server, calls = fake_server
    status, page = post(server, {"image": ("big.png", png_bytes((600, 600), 1) + b"\0" * 60_000)})
    assert status == 413 and "too large" in page
    assert not calls


def test_server_errors_do_not_leak_a_stack_trace(fake_server):
    server, _ = fake_server
    status, page = post(server, {"report": (None, "boom")})
    assert status == 500 and "internal details" not in page and "server log" in page


def test_decode_upload_converts_modes_and_rejects_garbage():
    buffer = io.BytesIO()
    Image.new("RGBA", (10, 10)).save(buffer, format="PNG")
    assert decode_upload(buffer.getvalue()).size == (10, 10)
    with pytest.raises(UserInputError, match="not a readable image"):
        decode_upload(png_bytes()[:30], "cut.png")


def test_decode_upload_reads_dicom(tmp_path):
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns = 8, 12
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(96, dtype=np.uint16).reshape(8, 12) * 40).tobytes()
    ds.save_as(str(tmp_path / "x.dcm"), enforce_file_format=True)
    image = decode_upload((tmp_path / "x.dcm").read_bytes(), "x.dcm")
    assert image.size == (12, 8)


def test_parse_multipart_needs_multipart():
    with pytest.raises(UserInputError):
        parse_multipart("text/plain", b"hello")


# -- the real page in a real browser -------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """`cxr-mtclip serve`'s search stack (tiny model, phantom data, FAISS) on a free loopback port."""
    from cxr_mtclip import CxrMtClipConfig, CxrMtClipModel, CxrMtClipProcessor, build_wordpiece_tokenizer
    from cxr_mtclip.cli import _hits
    from cxr_mtclip.data import make_phantom_openi
    from cxr_mtclip.retrieval import RetrievalIndex

    root = tmp_path_factory.mktemp("serve")
    data = make_phantom_openi(24, seed=3, image_size=64)
    tokenizer = build_wordpiece_tokenizer(data["report"], root / "tok", vocab_size=300)
    config = CxrMtClipConfig.from_registry("demo", vocab_size=len(tokenizer))
    torch.manual_seed(0)
    model = CxrMtClipModel(config).eval()
    processor = CxrMtClipProcessor.from_config(config, tokenizer)
    retriever = RetrievalIndex.build(model, processor, data, kind="flat", show_progress=False)

    def to_hits(result):
        scores, examples = result
        return [SearchHit(h["uid"], h["label"], h["score"], h["report"], thumbnail_png(examples["image"][h["rank"] - 1]), h["source"])
                for h in _hits(scores, examples)]

    server = make_server(lambda im, k, mode: to_hits(retriever.search_by_image(im, k=k, mode=mode)),
                         lambda text, k, mode: to_hits(retriever.search_by_text(text, k=k, mode=mode)),
                         data_note="data: 24 SYNTHETIC phantom studies", max_upload_bytes=2_000_000)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    query = root / "query.png"
    data[0]["image"].save(query)
    not_image = root / "notes.txt"
    not_image.write_text("definitely not an x-ray")
    yield server, query, not_image, data
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("the browser test needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1200,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.browser
def test_browser_upload_text_and_error(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def submit_and_wait_for(element_id):
        """Click Search and wait until the answer page (which holds `element_id`) has replaced the form page."""
        old = browser.find_element(By.TAG_NAME, "html")
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 60).until(EC.staleness_of(old))
        return WebDriverWait(browser, 60).until(EC.presence_of_element_located((By.ID, element_id)))

    server, query, not_image, data = live_server
    browser.get(server.url)
    assert "SYNTHETIC" in browser.find_element(By.ID, "data-note").text

    browser.find_element(By.ID, "image").send_keys(str(query))
    Select(browser.find_element(By.ID, "mode")).select_by_value("cross-modal")
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys("3")
    submit_and_wait_for("results")
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#results img.thumb")
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .label")]
    assert len(thumbs) == 3 and all(t.get_attribute("src").startswith("data:image/png;base64,") for t in thumbs)
    assert len(labels) == 3 and set(labels) <= {"normal", "abnormal"}
    assert browser.execute_script("return arguments[0].naturalWidth", thumbs[0]) > 0
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "serve_image_query.png"))

    browser.get(server.url)
    browser.find_element(By.ID, "report").send_keys(data[1]["report"])
    submit_and_wait_for("results")
    reports = browser.find_elements(By.CSS_SELECTOR, "#results .report")
    assert len(reports) == 5 and "report query" in browser.find_element(By.ID, "results-title").text

    browser.get(server.url)
    browser.find_element(By.ID, "image").send_keys(str(not_image))
    error = submit_and_wait_for("error").text
    assert "not a readable image" in error and "Traceback" not in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "serve_error.png"))
