"""The ASGI application behind ``fastsam serve``: a web page and a JSON HTTP API.

Everything the app uses comes in through :func:`create_app` (the predictor, an optional CLIP
scorer, the limits); nothing lives at module level. Images are segmented once ("everything mode",
under a lock: one network run at a time) and cached by content hash; prompts are pure selections
over the cached masks (:mod:`fastsam.prompts`, :mod:`fastsam.text`) and never wait for the network.

All coordinates in the API are original-image pixels, x = column and y = row. Every error is a
4xx/5xx response with the body ``{"error": "<one line saying what is wrong>"}``.

The event loop only moves bytes: multipart parsing, image decoding, JSON parsing and validation,
selection and serialisation run in worker threads, so one expensive request never stalls the
others (``GET /api/info`` answers while a 300,000-part upload is refused).

Memory ceiling. An upload takes one of ``max_pending`` slots *before* its body is read and gives
it back once its result is cached; without a slot it is answered 503 with ``Retry-After`` and
nothing is read. A slot holds at most the body and one copy of its file part (``2 x
max_body_bytes``) and, while decoding, about 14 bytes per pixel (Pillow's 4-byte pixels, a copy
of them for EXIF orientation, the 3-byte RGB array and one transient copy of it; up to 18 for an
RGBA or palette file that is converted too), then 3 bytes per pixel while it waits for the model.
The network runs one image at a time, so its working memory ``W`` counts once. Peak memory is
therefore about::

    baseline (weights, interpreter) + cache_bytes + W
        + max_pending x (2 x max_body_bytes + 18 x max_pixels)

With the defaults (2 slots, 25 MiB bodies, 25 Mpx images, a 1 GiB cache) that is baseline + W +
1 GiB + about 1 GB. Prompts are bounded by ``max_prompt_bytes`` each and allocate one
width x height bool canvas (1 byte per pixel) while they run.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..config import PredictConfig
from ..errors import FastSAMError
from .guard import Guard
from .schemas import ApiError, ImageResult, Info, PromptRequest, PromptResult, responses, validation_message
from .service import NO_CLIP_MESSAGE, Predictor, Service
from .state import ImageEntry, ResultCache
from .uploads import DEFAULT_MAX_PARTS, decode_image, multipart_file

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_PROMPT_BYTES",
    "NO_CLIP_MESSAGE",
    "RETRY_AFTER_S",
    "ApiError",
    "Predictor",
    "PromptRequest",
    "create_app",
    "decode_image",
    "multipart_file",
]

log = logging.getLogger("fastsam.serve")

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_PIXELS = 25_000_000  # a 24-megapixel photo; its RGB array is 75 MB
DEFAULT_MAX_PROMPT_BYTES = 1024 * 1024  # 256 points, 64 boxes and 16 texts take under 20 kB
DEFAULT_MAX_PENDING = 2  # one image in the network, one decoded and ready for it
DEFAULT_CACHE_ITEMS = 32
DEFAULT_CACHE_BYTES = 1024 * 1024 * 1024
RETRY_AFTER_S = 1  # an everything-mode run takes about that long
PROMPT_PATH = r"/api/images/[^/]+/prompt"
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# The page loads nothing from elsewhere; blob: is where the uploaded image is drawn from.
PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; object-src 'none'"


def _image_response(entry: ImageEntry, cached: bool, include_records: bool) -> Response:
    """The upload answer; the cached records JSON is spliced in, not re-serialised."""
    h, w = entry.size
    head = {
        "id": entry.id,
        "width": w,
        "height": h,
        "count": len(entry.segments),
        "cached": cached,
        "everything_ms": round(entry.everything_ms, 3),
    }
    body = json.dumps(head, separators=(",", ":")).encode()
    if include_records:
        body = body[:-1] + b',"records":' + entry.records_json + b"}"
    return Response(body, media_type="application/json")


async def _read_body(request: Request) -> bytes:
    """The whole request body (its size is bounded by :class:`~fastsam.serve.guard.Guard`)."""
    chunks = [chunk async for chunk in request.stream()]
    return b"".join(chunks)


def _static_files() -> dict[str, bytes]:
    root = resources.files("fastsam.serve") / "static"
    return {name: (root / name).read_bytes() for name in STATIC_FILES}


def _version() -> str:
    from .. import __version__

    return __version__


def create_app(
    predictor: Predictor,
    *,
    clip_scorer: Any = None,
    config: PredictConfig | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_parts: int = DEFAULT_MAX_PARTS,
    cache_items: int = DEFAULT_CACHE_ITEMS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> FastAPI:
    """The web UI and HTTP API over one predictor.

    Args:
        predictor: anything with ``segment(rgb, config) -> Segments`` (e.g. :class:`fastsam.FastSAM`);
            it is called under a lock, one image at a time.
        clip_scorer: a :class:`fastsam.text.TextScorer` (``similarity(crops, texts) -> (T, N)``) for
            text prompts; None answers text prompts with 501.
        config: everything-mode options (default ``PredictConfig()``).
        max_body_bytes: largest upload body accepted (413 above).
        max_pixels: largest image (width x height) accepted (413 above), checked before decoding.
        max_prompt_bytes: largest prompt body accepted (413 above); a prompt's own limit, whatever
            ``max_body_bytes`` is.
        max_pending: most uploads being read, decoded or waiting for the model at once; more are
            answered 503 with ``Retry-After`` before their body is read. Bounds memory (module doc).
        max_parts: most parts in a multipart upload (400 above).
        cache_items, cache_bytes: bounds of the LRU of everything-mode results.
    """
    limits = {
        "max_body_bytes": max_body_bytes,
        "max_pixels": max_pixels,
        "max_prompt_bytes": max_prompt_bytes,
        "max_pending": max_pending,
        "max_parts": max_parts,
    }
    bad = [name for name, value in limits.items() if value < 1]
    if bad:
        raise FastSAMError(f"{', '.join(bad)} must be >= 1")
    service = Service(
        predictor,
        clip_scorer,
        config or PredictConfig(),
        max_pixels,
        ResultCache(cache_items, cache_bytes),
        max_pending,
        max_parts,
    )
    static = _static_files()
    app = FastAPI(
        title="fastsam",
        version=_version(),
        docs_url=None,
        redoc_url=None,  # the docs UIs load from a CDN
        description="FastSAM everything mode and prompt selection. Coordinates are original-image "
        'pixels; errors are {"error": "..."}.',
    )
    app.state.service = service

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(list(exc.errors()))}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        # A client that hangs up mid-body is an abort, not a server fault: no traceback, nothing sent
        # (the answer below goes nowhere; the server drops it).
        log.debug("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)

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

    @app.get("/api/info", response_model=Info, responses=responses(400, 413), summary="Server status and limits")
    async def info() -> dict[str, Any]:
        # async: answered on the event loop itself, so it stays quick however busy the thread pool is
        return {
            "status": "ok",
            "text_prompts": service.scorer is not None,
            **limits,
            "cached_images": len(service.cache),
            "cache_bytes": service.cache.nbytes,
        }

    upload_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "image/*": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    @app.post(
        "/api/images",
        response_model=ImageResult,
        responses=responses(400, 413, 415, 422, 503),
        openapi_extra=upload_body,
        summary="Upload an image: everything-mode records and the id for prompts",
    )
    async def upload(request: Request, records: bool = True) -> Response:
        # The slot is taken before a byte of the body is read: bodies and decoded pixels in memory are
        # bounded by max_pending, not by the number of clients. Unread bodies wait in the kernel.
        if not service.slots.try_acquire():
            raise ApiError(
                503,
                f"server busy: {max_pending} uploads are already being decoded or segmented "
                f"(this server's limit); retry in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            payload = [await _read_body(request)]  # no local name: service.upload frees it once decoded
            entry, cached = await run_in_threadpool(service.upload, payload, request.headers.get("content-type", ""))
        finally:
            service.slots.release()
        return _image_response(entry, cached, records)

    @app.get(
        "/api/images/{image_id}",
        response_model=ImageResult,
        responses=responses(400, 404, 413, 422),
        summary="Everything-mode records of an uploaded image",
    )
    def get_image(image_id: str, records: bool = True) -> Response:
        return _image_response(service.entry(image_id), True, records)

    prompt_body = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PromptRequest"}}},
        }
    }

    @app.post(
        "/api/images/{image_id}/prompt",
        response_model=PromptResult,
        responses=responses(400, 404, 413, 422, 501),
        openapi_extra=prompt_body,
        summary="Select masks of an uploaded image by points, boxes and texts",
    )
    async def prompt(image_id: str, request: Request) -> Response:
        # The body is read here and parsed in a worker thread (FastAPI would parse and validate it on
        # the event loop). The answer is serialised there too: re-validating hundreds of records
        # against the schema costs more than the selection itself.
        body = await _read_body(request)
        ctype = request.headers.get("content-type")

        def answer() -> bytes:
            return json.dumps(service.prompt_body(image_id, body, ctype), separators=(",", ":")).encode()

        return Response(await run_in_threadpool(answer), media_type="application/json")

    def openapi() -> dict[str, Any]:
        # The prompt route reads its body itself, so FastAPI does not list PromptRequest: add it.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("schemas", {})["PromptRequest"] = (
                PromptRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        assert app.openapi_schema is not None  # FastAPI.openapi stores the schema it makes
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Guard, max_body_bytes=max_body_bytes, limits=[(PROMPT_PATH, max_prompt_bytes, "prompt body")])
    return app
