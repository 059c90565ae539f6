"""The ASGI application behind ``fastsam serve``: a web page and a JSON HTTP API.

Everything the app uses comes in through :func:`create_app` (the predictor, an optional CLIP
scorer, the limits); nothing lives at module level. Images are segmented once ("everything mode",
under a lock: one network run at a time) and cached by content hash; prompts are pure selections
over the cached masks (:mod:`fastsam.prompts`, :mod:`fastsam.text`) and never wait for the network.

All coordinates in the API are original-image pixels, x = column and y = row. Every error is a
4xx/5xx response with the body ``{"error": "<one line saying what is wrong>"}``.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from importlib import resources
from typing import Annotated, Any, Awaitable, Callable, Literal, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..config import PredictConfig
from ..errors import FastSAMError
from ..formats import rle_encode
from ..prompts import select_by_boxes, select_by_points
from ..results import Segments
from .state import ImageEntry, ResultCache, image_id

__all__ = ["create_app", "ApiError", "Predictor", "PromptRequest", "decode_image", "multipart_file",
           "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_PIXELS", "NO_CLIP_MESSAGE"]  # fmt: skip

log = logging.getLogger("fastsam.serve")

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_PIXELS = 25_000_000  # a 24-megapixel photo; its RGB array is 75 MB
DEFAULT_CACHE_ITEMS = 32
DEFAULT_CACHE_BYTES = 1024 * 1024 * 1024
#: Formats Pillow may open for an upload. Others (EPS would start Ghostscript, for one) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")  # JPEG includes MPO (phone photos)
NO_CLIP_MESSAGE = "text prompts are unavailable: the server has no CLIP weights (start it with --clip-weights PATH)"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# The page loads nothing from elsewhere; blob: is where the uploaded image is drawn from.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


class Predictor(Protocol):
    """What the app needs of a model: everything mode on an (H, W, 3) uint8 RGB array."""

    def segment(self, image: np.ndarray, config: PredictConfig | None = None) -> Segments: ...


class ApiError(HTTPException):
    """A request the server refuses; answered as ``{"error": detail}`` with ``status_code``."""


# -- request and response schemas (also the OpenAPI schema) ----------------------------------------
Finite = Annotated[float, Field(allow_inf_nan=False)]


class PromptRequest(BaseModel):
    """Prompts against one uploaded image. At least one of points, boxes, texts."""

    model_config = ConfigDict(extra="forbid")
    points: list[Annotated[list[Finite], Field(min_length=2, max_length=2)]] | None = Field(
        None, max_length=256, description="[[x, y], ...] in original pixels", examples=[[[320, 240]]])
    labels: list[Literal[0, 1]] | None = Field(
        None, max_length=256, description="one per point: 1 foreground, 0 background (default all 1)")
    boxes: list[Annotated[list[Finite], Field(min_length=4, max_length=4)]] | None = Field(
        None, max_length=64, description="[[x1, y1, x2, y2], ...] in original pixels; best mask per box")
    texts: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=16, description="phrases ranked against the masks with CLIP")
    point_mode: Literal["merge", "individual"] = Field(
        "merge", description="merge: the original FastSAM rule; individual: every mask a point hits")
    text_threshold: Finite | None = Field(
        None, description="select every mask with CLIP similarity >= this (default: the best one per text)")
    include_records: bool = Field(True, description="include the selected records in the answer")


class RLE(BaseModel):
    size: list[int]
    counts: str


class PromptResult(BaseModel):
    id: str
    indices: list[int] = Field(description="selected everything-mode indices (union over all prompts), sorted")
    by_prompt: dict[str, Any] = Field(description="indices per prompt kind: points (list), boxes (one per box, "
                                                  "-1 = none), texts (a list per text)")  # fmt: skip
    mask: RLE = Field(description="the combined selection (merged point mask, box and text masks) as COCO RLE")
    mask_area: int
    records: list[dict[str, Any]] | None = Field(None, description="records of `indices` (fastsam segment format)")
    elapsed_ms: float


class ImageResult(BaseModel):
    id: str = Field(description="content hash of the decoded pixels; use it for prompts")
    width: int
    height: int
    count: int = Field(description="number of everything-mode masks")
    cached: bool = Field(description="true if the result came from the cache (no network run)")
    everything_ms: float = Field(description="time of the network run that made the result")
    records: list[dict[str, Any]] | None = Field(None, description="SAM coco_rle records (fastsam segment format)")


class Info(BaseModel):
    status: str
    text_prompts: bool
    max_body_bytes: int
    max_pixels: int
    cached_images: int
    cache_bytes: int


class ErrorBody(BaseModel):
    error: str


ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 501)}


# -- uploads -----------------------------------------------------------------------------------------
def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an uploaded file; raise :class:`ApiError` if it is not a usable image.

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims a huge image costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    from ..io.images import load_image

    if not data:
        raise ApiError(400, "empty upload: send an image file as the request body or as multipart field 'file'")
    Image.init()
    formats = [f for f in IMAGE_FORMATS if f in Image.OPEN]  # WebP is optional in Pillow builds
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except UnidentifiedImageError:
        raise ApiError(415, f"upload is not a readable image (supported: {', '.join(formats)})") from None
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"image is over this server's limit of {max_pixels} pixels ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ApiError(415, f"corrupt image header: {e}") from None
    with img:
        w, h = img.size
        if w < 1 or h < 1:
            raise ApiError(415, f"image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise ApiError(413, f"image is {w}x{h} = {w * h} pixels, over this server's limit of {max_pixels}")
        try:
            img.load()
            return load_image(img)
        except (OSError, SyntaxError, ValueError) as e:  # truncated data, decoder errors, odd modes
            raise ApiError(415, f"corrupt image: {e}") from None


def multipart_file(body: bytes, content_type: str) -> bytes:
    """Bytes of the file part of a ``multipart/form-data`` body (field ``file`` or ``image``, else the
    first part with a filename). Parsed in memory: nothing the client names is written anywhere."""
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "malformed multipart upload: the Content-Type has no boundary")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    field, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1][0][bytes(field).strip().lower()] = bytes(value).strip()
        field.clear()
        value.clear()

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, bytearray())),
        "on_part_data": lambda d, s, e: parts[-1][1].extend(d[s:e]),
        "on_header_field": lambda d, s, e: field.extend(d[s:e]),
        "on_header_value": lambda d, s, e: value.extend(d[s:e]),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError) as e:
        raise ApiError(400, f"malformed multipart upload: {e}") from None
    best = None
    for headers, data in parts:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if disp.get(b"name") in (b"file", b"image"):
            return bytes(data)
        if best is None and b"filename" in disp:
            best = bytes(data)
    if best is None:
        raise ApiError(400, "multipart upload has no file: send the image as field 'file'")
    return best


# -- prompts -----------------------------------------------------------------------------------------
def _paint(canvas: np.ndarray, segments: Segments, k: int) -> None:
    crop, (r0, r1, c0, c1) = segments.crops[k], segments.regions[k]
    if crop.size:
        canvas[r0:r1, c0:c1] |= crop


def _mask_rle(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    return {"size": [h, w], "counts": rle_encode([mask], [(0, h, 0, w)], (h, w))[0]}


class _Service:
    """The app's state: predictor (behind a lock), result cache, optional CLIP scorer (behind its own lock)."""

    def __init__(self, predictor: Predictor, scorer: Any, config: PredictConfig, max_pixels: int,
                 cache: ResultCache) -> None:  # fmt: skip
        self.predictor, self.scorer, self.config = predictor, scorer, config
        self.max_pixels, self.cache = max_pixels, cache
        self.model_lock = threading.Lock()  # one network run at a time: it uses all cores anyway
        self.scorer_lock = threading.Lock()

    def upload(self, data: bytes) -> tuple[ImageEntry, bool]:
        """Decode, then the cached result for these pixels or a new everything-mode run."""
        rgb = decode_image(data, self.max_pixels)
        key = image_id(rgb)
        entry = self.cache.get(key)
        if entry is not None:
            return entry, True
        with self.model_lock:
            entry = self.cache.get(key)  # a concurrent upload of the same image may have finished
            if entry is not None:
                return entry, True
            t = time.perf_counter()
            try:
                segments = self.predictor.segment(rgb, self.config)
            except FastSAMError as e:
                raise ApiError(422, f"cannot segment this image: {e}") from None
            elapsed = (time.perf_counter() - t) * 1000
            # cached before the lock is released, so that concurrent uploads of this image wait for it
            # instead of running the network again
            entry = ImageEntry.build(key, rgb, segments, elapsed)
            self.cache.put(entry)
        return entry, False

    def entry(self, key: str) -> ImageEntry:
        entry = self.cache.get(key)
        if entry is None:
            raise ApiError(404, f"unknown image id {key[:64]!r}: upload the image first (results are kept for "
                                "a limited number of images)")  # fmt: skip
        return entry

    def prompt(self, entry: ImageEntry, req: PromptRequest) -> dict[str, Any]:
        """Selections of every prompt kind, their union and the combined (H, W) mask as RLE."""
        t = time.perf_counter()
        if req.labels is not None and req.points is None:
            raise ApiError(422, "labels given without points")
        if req.points is None and req.boxes is None and not req.texts:
            raise ApiError(422, "no prompt: give at least one of points, boxes or texts")
        if req.texts and self.scorer is None:
            raise ApiError(501, NO_CLIP_MESSAGE)
        seg = entry.segments
        canvas = np.zeros(seg.image_size, dtype=bool)
        chosen: set[int] = set()
        by: dict[str, Any] = {}
        try:
            if req.points is not None:
                sel = select_by_points(seg, req.points, req.labels, mode=req.point_mode)
                canvas |= sel.mask  # the merged mask: background points cut their masks out
                by["points"] = sel.indices.tolist()
                chosen.update(by["points"])
            if req.boxes is not None:
                by["boxes"] = select_by_boxes(seg, req.boxes).tolist()
                for k in by["boxes"]:
                    if k >= 0:
                        _paint(canvas, seg, k)
                        chosen.add(k)
            if req.texts:
                from ..text import select_by_text

                with self.scorer_lock:
                    hits = select_by_text(seg, entry.rgb, req.texts, self.scorer, threshold=req.text_threshold)
                by["texts"] = [h.tolist() for h in hits]
                for k in {int(k) for h in hits for k in h}:
                    _paint(canvas, seg, k)
                    chosen.add(k)
        except FastSAMError as e:
            raise ApiError(422, f"invalid prompt: {e}") from None
        indices = sorted(chosen)
        return {
            "id": entry.id, "indices": indices, "by_prompt": by, "mask": _mask_rle(canvas),
            "mask_area": int(np.count_nonzero(canvas)),
            "records": [entry.records[k] for k in indices] if req.include_records else None,
            "elapsed_ms": (time.perf_counter() - t) * 1000,
        }  # fmt: skip


def _image_response(entry: ImageEntry, cached: bool, include_records: bool) -> Response:
    """The upload answer; the cached records JSON is spliced in, not re-serialised."""
    h, w = entry.size
    head = {"id": entry.id, "width": w, "height": h, "count": len(entry.segments), "cached": cached,
            "everything_ms": round(entry.everything_ms, 3)}  # fmt: skip
    body = json.dumps(head, separators=(",", ":")).encode()
    if include_records:
        body = body[:-1] + b',"records":' + entry.records_json + b"}"
    return Response(body, media_type="application/json")


# -- ASGI plumbing -----------------------------------------------------------------------------------
class _BodyTooLarge(ApiError):
    pass


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class _Guard:
    """Pure ASGI middleware: request body limit and a ``Server-Timing`` header.

    The limit is checked twice: a declared ``Content-Length`` over it is refused before reading
    anything, and the bytes actually received are counted (a chunked or lying client is cut off
    as soon as it passes the limit). The timing is the server-side time until the response starts.
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    def _too_large(self) -> str:
        return f"request body exceeds this server's limit of {self.max_body_bytes} bytes"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, f"malformed Content-Length header {declared[:32].decode('latin-1')!r}")
                return
            if int(declared) > self.max_body_bytes:
                await _send_json(send, 413, self._too_large())
                return
        seen = 0

        async def counted_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge(413, self._too_large())
            return message

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing",
                                                                                   f"app;dur={ms:.3f}".encode())]}
            await send(message)

        await self.app(scope, counted_receive, timed_send)


def _validation_message(exc: RequestValidationError) -> str:
    """One line from pydantic's error list: where (``points.0``) and what."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    e = errors[0]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {(e.get('ctx') or {}).get('error', e.get('msg'))}"
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
    if not loc and e.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return "request body must be a JSON object of prompts"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid request: {loc + ': ' if loc else ''}{e.get('msg')}{more}"


def _static_files() -> dict[str, bytes]:
    root = resources.files("fastsam.serve") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_FILES}


def create_app(predictor: Predictor, *, clip_scorer: Any = None, config: PredictConfig | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
               cache_items: int = DEFAULT_CACHE_ITEMS, cache_bytes: int = DEFAULT_CACHE_BYTES) -> FastAPI:  # fmt: skip
    """The web UI and HTTP API over one predictor.

    Args:
        predictor: anything with ``segment(rgb, config) -> Segments`` (e.g. :class:`fastsam.FastSAM`);
            it is called under a lock, one image at a time.
        clip_scorer: a :class:`fastsam.text.TextScorer` (``similarity(crops, texts) -> (T, N)``) for
            text prompts; None answers text prompts with 501.
        config: everything-mode options (default ``PredictConfig()``).
        max_body_bytes: largest request body accepted (413 above).
        max_pixels: largest image (width x height) accepted (413 above), checked before decoding.
        cache_items, cache_bytes: bounds of the LRU of everything-mode results.
    """
    if max_body_bytes < 1 or max_pixels < 1:
        raise FastSAMError("max_body_bytes and max_pixels must be >= 1")
    service = _Service(predictor, clip_scorer, config or PredictConfig(), max_pixels,
                       ResultCache(cache_items, cache_bytes))  # fmt: skip
    static = _static_files()
    app = FastAPI(title="fastsam", version=_version(), docs_url=None, redoc_url=None,  # the docs UIs load from a CDN
                  description="FastSAM everything mode and prompt selection. Coordinates are original-image "
                              "pixels; errors are {\"error\": \"...\"}.")  # fmt: skip
    app.state.service = service

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal server error ({type(exc).__name__})"}, status_code=500)

    def page(name: str) -> Response:
        headers = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
        if name == "index.html":
            headers["content-security-policy"] = PAGE_CSP
        return Response(static[name], media_type=STATIC_FILES[name], headers=headers)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:  # served from memory: a client's path never reaches the file system
            raise ApiError(404, f"no such file {name[:64]!r}")
        return page(name)

    @app.get("/api/info", response_model=Info, summary="Server status and limits")
    def info() -> dict[str, Any]:
        return {"status": "ok", "text_prompts": service.scorer is not None, "max_body_bytes": max_body_bytes,
                "max_pixels": max_pixels, "cached_images": len(service.cache), "cache_bytes": service.cache.nbytes}

    upload_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}}  # fmt: skip

    @app.post("/api/images", response_model=ImageResult, responses=ERRORS, openapi_extra=upload_body,
              summary="Upload an image: everything-mode records and the id for prompts")  # fmt: skip
    async def upload(request: Request, records: bool = True) -> Response:
        body = bytearray()
        async for chunk in request.stream():  # counted by _Guard: stops past the limit
            body.extend(chunk)
        ctype = request.headers.get("content-type", "")
        data = multipart_file(bytes(body), ctype) if ctype.lower().startswith("multipart/") else bytes(body)
        entry, cached = await run_in_threadpool(service.upload, data)
        return _image_response(entry, cached, records)

    @app.get("/api/images/{image_id}", response_model=ImageResult, responses=ERRORS,
             summary="Everything-mode records of an uploaded image")  # fmt: skip
    def get_image(image_id: str, records: bool = True) -> Response:
        return _image_response(service.entry(image_id), True, records)

    @app.post("/api/images/{image_id}/prompt", response_model=PromptResult, responses=ERRORS,
              summary="Select masks of an uploaded image by points, boxes and texts")  # fmt: skip
    def prompt(image_id: str, req: PromptRequest) -> Response:
        # A plain def: FastAPI runs it in its thread pool, beside other prompts, without the model lock.
        # The answer is serialised here: re-validating hundreds of records against the schema costs more
        # than the selection itself.
        result = service.prompt(service.entry(image_id), req)
        return Response(json.dumps(result, separators=(",", ":")).encode(), media_type="application/json")

    app.add_middleware(_Guard, max_body_bytes=max_body_bytes)
    return app


def _version() -> str:
    from .. import __version__

    return __version__
