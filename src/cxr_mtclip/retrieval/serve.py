"""`cxr-mtclip serve`: a small search page over a saved model, dataset and FAISS indexes.

Upload a chest X-ray (PNG, JPEG or DICOM) or type a report, pick the search mode, and see the top-k studies
with thumbnails, report text, label and score. It uses only the standard library's HTTP server, binds to
127.0.0.1 by default, refuses uploads over a size limit and files that are not images with a visible message,
and never shows a stack trace.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import html
import io
import logging
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MODES = ("paper", "cross-modal")


@dataclass
class SearchHit:
    """One result row as the page shows it."""

    uid: str
    label: str
    score: float
    report: str
    thumbnail_png: bytes | None
    source: str


SearchFn = Callable[[Any, int, str], list[SearchHit]]


class UserInputError(ValueError):
    """A problem with what the user sent; its message is shown on the page."""


def decode_upload(data: bytes, filename: str = "upload") -> Image.Image:
    """Open uploaded bytes as an image (PNG/JPEG/... via PIL, DICOM via pydicom); UserInputError if it is not one."""
    if not data:
        raise UserInputError(f"{filename}: the file is empty")
    if len(data) > 132 and data[128:132] == b"DICM":
        try:
            from ..data.dicom import read_dicom

            return read_dicom(io.BytesIO(data))
        except Exception as err:  # any decoding failure is the user's file, not our bug
            raise UserInputError(f"{filename}: not a readable DICOM image ({err})") from err
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserInputError(f"{filename}: not a readable image (expected PNG, JPEG or DICOM)") from err
    if image.width == 0 or image.height == 0:
        raise UserInputError(f"{filename}: the image is empty")
    return image


def thumbnail_png(image: Image.Image | None, size: int = 128) -> bytes | None:
    if image is None:
        return None
    thumb = image.convert("L")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return buffer.getvalue()


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename or None, raw bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise UserInputError("the form must be sent as multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


PAGE_STYLE = """
body{font-family:sans-serif;margin:1.5em;max-width:70em}
.note{background:#fff3cd;padding:.5em;border:1px solid #e0c36c}
.error{background:#f8d7da;color:#721c24;padding:.6em;border:1px solid #f1aeb5;margin:1em 0}
.hit{display:flex;gap:1em;border-bottom:1px solid #ddd;padding:.5em 0}
.hit img{width:128px;height:128px;object-fit:contain;background:#000}
.label-normal{color:#176c2c;font-weight:bold}.label-abnormal{color:#a3151a;font-weight:bold}
fieldset{margin-bottom:1em}
"""


def render_page(*, data_note: str, hits: list[SearchHit] | None = None, error: str | None = None,
                query_text: str = "", query_kind: str = "", mode: str = "paper", k: int = 5) -> str:
    esc = html.escape
    mode_options = "".join(
        f'<option value="{m}"{" selected" if m == mode else ""}>{m}</option>' for m in MODES
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cxr_mtclip search</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        "<h1>CXR image &harr; report search</h1>",
        f"<p class='note' id='data-note'>{esc(data_note)}</p>",
        "<form id='search-form' method='post' action='/search' enctype='multipart/form-data'>",
        "<fieldset><legend>Query</legend>",
        "<p><label>Chest X-ray (PNG, JPEG or DICOM): <input type='file' id='image' name='image'></label></p>",
        f"<p><label>or a report:<br><textarea id='report' name='report' rows='4' cols='80'>{esc(query_text)}</textarea></label></p>",
        "</fieldset>",
        f"<p><label>Mode <select id='mode' name='mode'>{mode_options}</select></label> ",
        f"<label>Top-k <input id='k' name='k' type='number' min='1' max='50' value='{int(k)}'></label> ",
        "<button id='submit' type='submit'>Search</button></p></form>",
        "<p><small>paper: the query against the fused (image+report) index, as in the paper's Algorithm 2. "
        "cross-modal: an image query searches the report index, a report query the image index.</small></p>",
    ]
    if error:
        parts.append(f"<div class='error' id='error' role='alert'>{esc(error)}</div>")
    if hits is not None:
        parts.append(f"<h2 id='results-title'>Top {len(hits)} studies for the {esc(query_kind)} query ({esc(mode)} mode)</h2>")
        parts.append("<div id='results'>")
        for rank, hit in enumerate(hits, 1):
            img = (
                f"<img class='thumb' alt='study {esc(hit.uid)}' src='data:image/png;base64,{base64.b64encode(hit.thumbnail_png).decode()}'>"
                if hit.thumbnail_png else "<div class='thumb'>(no image)</div>"
            )
            parts.append(
                f"<div class='hit'>{img}<div><b>#{rank}</b> study <span class='uid'>{esc(hit.uid)}</span> "
                f"&middot; <span class='label label-{esc(hit.label)}'>{esc(hit.label)}</span> "
                f"&middot; score <span class='score'>{hit.score:.4f}</span> &middot; {esc(hit.source)}"
                f"<p class='report'>{esc(hit.report)}</p></div></div>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


class SearchHandler(BaseHTTPRequestHandler):
    """GET / shows the form; POST /search runs a query and shows results or a message."""

    server: "SearchServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        logger.info("%s - %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?")[0] not in ("/", "/index.html"):
            self._send(HTTPStatus.NOT_FOUND, render_page(data_note=self.server.data_note, error="Page not found."))
            return
        self._send(HTTPStatus.OK, render_page(data_note=self.server.data_note))

    def do_POST(self) -> None:  # noqa: N802
        note = self.server.data_note
        if self.path != "/search":
            self._send(HTTPStatus.NOT_FOUND, render_page(data_note=note, error="Page not found."))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_upload_bytes:
            # Drain what the client sends so it sees the page, but never hold more than the limit.
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
            limit_mb = self.server.max_upload_bytes / (1024 * 1024)
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                       render_page(data_note=note, error=f"The upload is too large: the limit is {limit_mb:.1f} MB."))
            return
        body = self.rfile.read(length)
        mode, k, text = "paper", 5, ""
        try:
            fields = parse_multipart(self.headers.get("Content-Type", ""), body)
            mode = fields.get("mode", (None, b"paper"))[1].decode("utf-8", "replace").strip() or "paper"
            if mode not in MODES:
                raise UserInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
            try:
                k = int(fields.get("k", (None, b"5"))[1] or 5)
            except ValueError as err:
                raise UserInputError("top-k must be a whole number") from err
            if not 1 <= k <= 50:
                raise UserInputError("top-k must be between 1 and 50")
            filename, data = fields.get("image", (None, b""))
            text = fields.get("report", (None, b""))[1].decode("utf-8", "replace").strip()
            if filename and data:
                image = decode_upload(data, filename)
                hits, kind = self.server.search_image(image, k, mode), "image"
            elif filename and not data:
                raise UserInputError(f"{filename}: the file is empty")
            elif text:
                hits, kind = self.server.search_text(text, k, mode), "report"
            else:
                raise UserInputError("Upload a chest X-ray or type a report to search.")
        except UserInputError as err:
            self._send(HTTPStatus.BAD_REQUEST, render_page(data_note=note, error=str(err), query_text=text, mode=mode, k=k))
            return
        except Exception:  # never a stack trace to the user; the log keeps it
            logger.exception("search failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR,
                       render_page(data_note=note, error="The search failed on the server; see the server log.", query_text=text))
            return
        self._send(HTTPStatus.OK, render_page(data_note=note, hits=hits, query_text=text, query_kind=kind, mode=mode, k=k))


class SearchServer(ThreadingHTTPServer):
    """The HTTP server, holding the two search callables and the page settings."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], search_image: SearchFn, search_text: SearchFn, *,
                 data_note: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        super().__init__(address, SearchHandler)
        self.search_image = search_image
        self.search_text = search_text
        self.data_note = data_note
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def make_server(search_image: SearchFn, search_text: SearchFn, *, data_note: str, host: str = "127.0.0.1",
                port: int = 0, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> SearchServer:
    """Create (not start) the search server; port 0 picks a free port. Serve with `server.serve_forever()`."""
    return SearchServer((host, port), search_image, search_text, data_note=data_note, max_upload_bytes=max_upload_bytes)
