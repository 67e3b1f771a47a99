"""The search app: a Gradio Blocks page and API over a loaded `RetrievalIndex` (``cxr-mtclip serve``, the Space).

Upload a chest X-ray (PNG, JPEG or DICOM, found by content), type a report, or both; pick what to find in plain
words (default: reports for an image, images for a report, similar studies for both, similar X-rays for an image
when the gallery has no reports; or one of them explicitly); set top-k and filters.
Results come back as a gallery (thumbnail, label, score, report) with one line explaining the score, the
query image as the model sees it, and a notice when the report was cut at the model's context. The same
search is an API (``/search``) for `gradio_client`::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    query_image, notice, score_note, gallery, results = client.predict(
        handle_file("cxr.dcm"), "small left effusion", "auto", 5, "any", api_name="/search")

(one more argument per metadata filter the index offers; ``client.view_api()`` lists them).
`launch_kwargs` keeps it on loopback, refuses uploads over `max_file_size`, shows no stack traces, keeps no
query history in the browser, and adds `AccessLogMiddleware` (one log line per request with its latency, a
408 when a request body stalls). Gradio's analytics are off, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check / telemetry calls to the internet

import gradio as gr
from PIL import Image, ImageDraw

from ..data.images import is_dicom_bytes, open_image
from ..image_processing_cxr_mtclip import to_rgb
from .retrieval_index import RetrievalIndex, SearchResults

__all__ = [
    "API_NAME",
    "MODE_CHOICES",
    "AccessLogMiddleware",
    "UserInputError",
    "build_demo",
    "decode_upload",
    "launch_kwargs",
    "thumbnail",
]

logger = logging.getLogger("cxr_mtclip.app")

API_NAME = "search"
MODE_CHOICES = [
    ("Automatic: reports for an image, images for a report, similar studies for both", "auto"),
    ("Find reports for this image", "image_to_text"),
    ("Find images for this report", "text_to_image"),
    ("Find similar studies (image and report together)", "fused"),
    ("Find similar X-rays (this image against the gallery's images)", "image_to_image"),
    ("Compare with whole studies (the paper's protocol: scores run high)", "paper"),
]
LABEL_CHOICES = [("Any", "any"), ("Normal only", "normal"), ("Abnormal only", "abnormal")]
MAX_K = 50
MAX_FILTER_CHOICES = 64  # a metadata column with more distinct values gets no filter box
_NOT_FILTER_BOXES = {"uid", "report", "findings", "impression", "image_file", "mesh", "label", "source"}
FILTER_BOX_LABELS = {"view": "View (any if empty)",
                     "finding_labels": "Findings (studies with any of these; any study if empty)"}
THUMBNAIL_PX = 256
APP_CSS = """
#notice {border-left: 4px solid #d97706; background: #fff7ed; padding: .4em .8em}
#notice:has([data-testid="markdown"] .md:empty) {display: none}
@media (max-width: 640px) { #results .grid-container { --grid-cols: 2 !important; } }
#results .thumbnail-item {display: flex; flex-direction: column; height: auto; aspect-ratio: auto}
#results .thumbnail-item img {aspect-ratio: 1 / 1; height: auto}
#results .caption-label {position: static; max-width: none; white-space: pre-line; opacity: 1; border: none;
  font-size: var(--text-sm); display: -webkit-box; -webkit-line-clamp: 5; -webkit-box-orient: vertical;
  padding-bottom: 0; border-bottom: var(--block-label-padding) solid transparent}
"""
# line-clamp clips at the padding edge: a bottom padding would show the top of the 6th line under the "..."; a
# transparent bottom border keeps the spacing outside the clip
# The caption and 2-column rules use gradio's internal class names (.caption-label, .thumbnail-item,
# .grid-container); tests/test_app.py's phone-width check fails if an upgrade renames them.


class UserInputError(ValueError):
    """A problem with what the user sent; shown to them as it is."""


def decode_upload(source: Any, name: str | None = None) -> Image.Image:
    """An uploaded file (path or bytes) as a PIL image through `open_image` (PNG, JPEG, DICOM by content).

    Raises UserInputError naming the file by `name` (not the upload's temp path): "the file is empty", "not a
    readable DICOM image (why)" or "not a readable image (expected PNG, JPEG or DICOM): why".
    """
    label = name or (os.path.basename(source) if isinstance(source, (str, os.PathLike)) else "upload")
    try:
        return open_image(source, name=label)
    except (ValueError, FileNotFoundError) as err:
        detail = str(err).removeprefix(f"{label}: ")
        if detail.startswith("unreadable image (") and detail.endswith(")"):
            detail = detail[len("unreadable image (") : -1]
        head = _head(source)
        if not head:
            raise UserInputError(f"{label}: the file is empty") from None
        if is_dicom_bytes(head) or label.lower().endswith((".dcm", ".dicom")):
            raise UserInputError(f"{label}: not a readable DICOM image ({detail})") from None
        if detail.startswith("not an image format"):  # open_image names its libraries; a user needs the formats
            raise UserInputError(f"{label}: not a readable image (expected PNG, JPEG or DICOM)") from None
        raise UserInputError(f"{label}: not a readable image (expected PNG, JPEG or DICOM): {detail}") from None


def _head(source: Any) -> bytes:
    """The first 132 bytes of an upload (enough for the DICOM magic); b"?" when they cannot be read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:132])
    try:
        with open(source, "rb") as handle:
            return handle.read(132)
    except (OSError, TypeError):
        return b"?"


def thumbnail(image: Any, size: int = THUMBNAIL_PX) -> Image.Image:
    """An 8-bit RGB thumbnail through the model's own reader: `open_image`, then the image processor's `to_rgb`
    (16-bit and float greys min-max scaled, DICOM through pydicom's VOI LUT)."""
    picture = to_rgb(open_image(image))
    picture.thumbnail((size, size))
    return picture


def _placeholder(size: int = 96) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 235))
    ImageDraw.Draw(image).text((8, size // 2 - 6), "no image", fill=(90, 90, 90))
    return image


def resolve_mode(mode: str, has_image: bool, has_text: bool,
                 index_names: Sequence[str] = ("image_embeds", "text_embeds", "fused_embeds"),
                 ) -> tuple[str, str | None, str | None]:
    """(RetrievalIndex mode, what to leave out: "text", "image" or None, the index to search or None for the
    mode's) for the page's plain-words choice. "Automatic" with an image alone finds similar X-rays when the gallery
    has no reports (an archive indexed without a metadata file)."""
    if not has_image and not has_text:
        raise UserInputError("Upload a chest X-ray or type a report to search.")
    if mode == "image_to_image":
        if not has_image:
            raise UserInputError("'Find similar X-rays' needs an image: upload one, or pick another option.")
        if "image_embeds" not in index_names:
            raise UserInputError("This gallery has no image index, so it cannot find similar X-rays.")
        return "cross-modal", "text" if has_text else None, "image_embeds"
    if mode == "auto":
        if has_image and "text_embeds" not in index_names and "image_embeds" in index_names:
            # no reports to find (nor whole studies, with a report): similar X-rays instead
            return "cross-modal", "text" if has_text and "fused_embeds" not in index_names else None, "image_embeds"
        return "cross-modal", None, None
    if mode == "paper":
        return "paper", None, None
    if mode == "image_to_text":
        if not has_image:
            raise UserInputError("'Find reports for this image' needs an image: upload one, or pick another option.")
        return "cross-modal", "text" if has_text else None, None
    if mode == "text_to_image":
        if not has_text:
            raise UserInputError("'Find images for this report' needs a report: type one, or pick another option.")
        return "cross-modal", "image" if has_image else None, None
    if mode == "fused":
        if not (has_image and has_text):
            raise UserInputError("'Find similar studies' needs both an image and a report.")
        return "cross-modal", None, None
    raise UserInputError(f"unknown search option {mode!r}; expected one of {[v for _, v in MODE_CHOICES]}")


def score_note(results: SearchResults) -> str:
    """One line on what the score of this search means."""
    query = {"image": "your image", "text": "your report", "study": "your image + report",
             "embedding": "your query"}[results.query]
    target = {"image_embeds": "each image", "text_embeds": "each report",
              "fused_embeds": "each study (image + report)"}.get(results.index_name, "each row")
    if results.mode == "paper":
        target = "each whole study (image + report averaged)"
    cross = ((results.query, results.index_name) in (("image", "text_embeds"), ("text", "image_embeds")))
    typical = ("an image and a report are different kinds of data, so even good matches score low (about 0.3-0.5 "
               "for a trained model)" if cross else "same-kind and whole-study comparisons score high (0.9 and above is common)")
    return (f"**Score** = cosine similarity between {query} and {target}, from -1 to 1 (higher is closer); "
            f"{typical}. Compare scores within one search only.")


def truncation_notice(index: RetrievalIndex, report: str, results: SearchResults) -> str:
    if not results.truncated:
        return ""
    from ..processing_cxr_mtclip import clean_report

    processor = index.processor
    ids = processor.tokenizer(clean_report(report, getattr(processor, "clean", "whitespace")),
                              truncation=False)["input_ids"]
    tail = processor.tokenizer.decode(ids[max(1, results.max_tokens - 7): results.max_tokens - 1])
    return (f"**Your report was cut.** It has {results.query_tokens} tokens; the model reads only the first "
            f"{results.max_tokens}, so everything after \"...{tail}\" was ignored.")


def filter_boxes(index: RetrievalIndex) -> dict[str, list[str]]:
    """Metadata columns offered as filter boxes, with their values (a column with at most MAX_FILTER_CHOICES)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    boxes = {}
    for column in index.filterable_columns:
        if column in _NOT_FILTER_BOXES:
            continue
        data = index.rows.with_format("arrow", columns=[column])[:].column(column)
        if pa.types.is_list(data.type) or pa.types.is_large_list(data.type) or pa.types.is_fixed_size_list(data.type):
            data = pc.list_flatten(data)
        values = [v for v in pc.unique(data).to_pylist() if v is not None]
        feature = index.rows.features[column]
        inner = getattr(feature, "feature", feature)
        if hasattr(inner, "int2str"):
            values = [inner.int2str(int(v)) for v in values]
        if 0 < len(values) <= MAX_FILTER_CHOICES:
            boxes[column] = sorted(str(v) for v in values)
    return boxes


def build_demo(index: RetrievalIndex, *, title: str = "Chest X-ray image ↔ report search") -> gr.Blocks:
    """The Blocks app over `index` (which needs its model); launch with ``demo.launch(**launch_kwargs(...))``."""
    if index.model is None:
        raise ValueError("the app embeds queries: load the index with its model (RetrievalIndex.load(folder, model=...))")
    boxes = filter_boxes(index)
    has_label = "label" in index.filterable_columns

    def show_upload(file_path: str | None):
        if not file_path:
            return None
        try:
            return thumbnail(decode_upload(file_path), 512)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def run_search(file_path: str | None, report: str, mode: str, k: float, label: str, *rest: Any):
        # gradio passes one value per filter box, then the gr.Request (see __signature__ below)
        chosen, request = rest[: len(boxes)], (rest[len(boxes)] if len(rest) > len(boxes) else None)
        start = time.perf_counter()
        status, hits, resolved = "error", 0, mode
        report = (report or "").strip()
        try:
            image = decode_upload(file_path) if file_path else None
            resolved, leave_out, index_name = resolve_mode(mode, image is not None, bool(report), index.index_names)
            k = int(k)
            if not 1 <= k <= MAX_K:
                raise UserInputError(f"top-k must be between 1 and {MAX_K}")
            filters: dict[str, Any] = {}
            if label not in {v for _, v in LABEL_CHOICES}:
                raise UserInputError(f"unknown label choice {label!r}")
            if label != "any":
                filters["label"] = label
            for column, values in zip(boxes, chosen):
                if values:
                    filters[column] = list(values)
            try:
                results = index.search(image=None if leave_out == "image" else image,
                                       text=None if leave_out == "text" or not report else report,
                                       k=k, mode=resolved, filters=filters, index_name=index_name)
            except ValueError as err:
                raise UserInputError(str(err)) from None
            hits = len(results)
            notes = [truncation_notice(index, report, results)]
            if leave_out:
                notes.append(f"Your {'report' if leave_out == 'text' else 'image'} was not used: this option "
                             f"searches with the {'image' if leave_out == 'text' else 'report'} only.")
            if hits < k:
                notes.append(f"Only {hits} studies match the filters." if filters else f"The index holds only {hits} studies.")
            gallery = [(_thumb(example), _caption(record)) for example, record in zip(_images(results), results.records)]
            payload = {"mode": results.mode, "protocol": results.mode, "query": results.query,
                       "index": results.index_name, "k": k, "filters": filters, "truncated": results.truncated,
                       "data": index.manifest.data_note, "hits": results.records}
            status = "ok"
            shown = thumbnail(image, 512) if image is not None else None
            return shown, "\n\n".join(n for n in notes if n), score_note(results), gallery, payload
        except UserInputError as err:
            status = "user-error"
            raise gr.Error(str(err), print_exception=False) from None
        finally:
            client = request.client.host if isinstance(request, gr.Request) and request.client else "-"
            logger.info("search client=%s mode=%s/%s k=%s image=%s report_chars=%d hits=%d status=%s latency_ms=%.1f",
                        client, mode, resolved, k, bool(file_path), len(report), hits, status,
                        (time.perf_counter() - start) * 1000)

    names = [_param_name(c) for c in boxes]
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in
              ("file_path", "report", "mode", "k", "label", *names)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    run_search.__signature__ = inspect.Signature(params)  # the API names one argument per filter box
    run_search.__annotations__ = {"request": gr.Request}  # gradio injects the request by this type hint

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"## {title}")
        gr.Markdown(index.manifest.data_note, elem_id="data-note")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="upload")
                query_image = gr.Image(label="Your query image (decoded: 16-bit and DICOM windowed)", interactive=False, format="png",
                                       height=220, elem_id="query-image", buttons=[])
                report = gr.Textbox(label="Report (optional)", lines=4, max_lines=12, elem_id="report",
                                    placeholder="e.g. small left pleural effusion")
            with gr.Column(scale=1, min_width=300):
                mode = gr.Radio(MODE_CHOICES, value="auto", label="What to find", elem_id="mode")
                k = gr.Slider(1, MAX_K, value=5, step=1, label="How many results (top-k)", elem_id="k")
                label = gr.Radio(LABEL_CHOICES, value="any", label="Label", elem_id="label-filter",
                                 visible=has_label)
                selectors = [gr.Dropdown([(_plain(v), v) for v in values], multiselect=True, value=[],
                                         label=_filter_label(column), elem_id=f"filter-{_param_name(column)}")
                             for column, values in boxes.items()]
                button = gr.Button("Search", variant="primary", elem_id="search")
        notice = gr.Markdown("", elem_id="notice", label="Notice")
        note = gr.Markdown("", elem_id="score-note", label="What the score means")
        gallery = gr.Gallery(label="Results", columns=5, object_fit="contain", height="fit-content", format="png",
                             elem_id="results", buttons=[])
        with gr.Accordion("Results as JSON", open=False):
            results = gr.JSON(elem_id="results-json", label="Results (JSON)")
        upload.upload(show_upload, inputs=upload, outputs=query_image, api_visibility="private")
        upload.clear(lambda: None, outputs=query_image, api_visibility="private")
        button.click(run_search, inputs=[upload, report, mode, k, label, *selectors],
                     outputs=[query_image, notice, note, gallery, results], api_name=API_NAME)
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


def _param_name(column: str) -> str:
    name = "".join(ch if ch.isalnum() else "_" for ch in column)
    return name if name and not name[0].isdigit() else f"f_{name}"


def _plain(value: str) -> str:
    """A column value or name as words ("pleural_effusion" -> "pleural effusion"); the API keeps the value."""
    return value.replace("_", " ")


def _filter_label(column: str) -> str:
    return FILTER_BOX_LABELS.get(column) or f"{_plain(column).capitalize()} (any if empty)"


def _images(results: SearchResults) -> list[Any]:
    return results.examples.get("image") or [None] * len(results)


def _thumb(image: Any) -> Image.Image:
    return _placeholder() if image is None else thumbnail(image)


def _caption(record: dict[str, Any]) -> str:
    label = record.get("label") or "unlabelled"
    where = f" ({record['view']})" if record.get("view") else ""
    return f"#{record['rank']} {label} · score {record['score']:.3f} · {record.get('uid', record['row'])}{where}\n" \
           f"{record.get('report') or '(no report)'}"


# -- the server around it ---------------------------------------------------------------------------


class AccessLogMiddleware:
    """Pure-ASGI middleware: one log line per HTTP request (client, method, path, status, bytes, latency), and
    a 408 when a request body stalls for `body_timeout_s` (uvicorn itself would wait for it forever)."""

    def __init__(self, app: Any, body_timeout_s: float = 5.0) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.requests import ClientDisconnect

        start = time.perf_counter()
        state = {"status": 0, "started": False, "body_done": False, "timed_out": False, "bytes": 0}

        async def timed_receive() -> dict:
            if state["body_done"]:
                return await receive()  # body read: later calls only wait for a disconnect (SSE)
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                state["timed_out"] = True
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                state["body_done"] = not message.get("more_body", False)
            return message

        async def logged_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["started"], state["status"] = True, message["status"]
                if message["status"] >= 400 and not state["body_done"]:
                    # refused before the body was read (413...): close, or uvicorn drains the rest of it
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, logged_send)
        except ClientDisconnect:
            state["status"] = state["status"] or 499  # the client left mid-body: a log line, not a traceback
        except Exception:
            if not state["timed_out"]:
                raise
        finally:
            if state["timed_out"] and not state["started"]:
                state["status"] = 408
                await send({"type": "http.response.start", "status": 408,
                            "headers": [(b"content-type", b"text/plain"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": b"request body timed out\n"})
            client = scope.get("client") or ("-", 0)
            logger.info("%s %s %s status=%d body_bytes=%d latency_ms=%.1f", client[0], scope["method"], scope["path"],
                        state["status"], state["bytes"], (time.perf_counter() - start) * 1000)


def launch_kwargs(*, host: str = "127.0.0.1", port: int = 7860, max_file_size: str | int = "10mb",
                  body_timeout_s: float = 5.0) -> dict[str, Any]:
    """`demo.launch(**...)`: loopback by default, an upload size limit, no error details, no share link, no
    monitoring endpoint, no query history in the browser, no Node server, the access-log middleware."""
    from starlette.middleware import Middleware

    return dict(
        server_name=host, server_port=port, max_file_size=max_file_size,
        show_error=False,          # unexpected exceptions show "Error" only; gr.Error messages still show
        share=False, enable_monitoring=False, run_history=False, footer_links=["api"], ssr_mode=False, quiet=True,
        css=APP_CSS,
        app_kwargs={"middleware": [Middleware(AccessLogMiddleware, body_timeout_s=body_timeout_s)]},
    )

