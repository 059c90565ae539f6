"""The HTTP API's request and response models (also its OpenAPI schema), its error type, and the
parsing of a prompt body.

A prompt body is parsed by :func:`parse_prompt`, which the app runs in a worker thread (never on
the event loop), and its lists are measured before any item is validated: a body with a million
points is refused by its length at once, not after a million validations. The body itself is
bounded before it is read (``max_prompt_bytes`` of :func:`fastsam.serve.create_app`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

__all__ = [
    "MAX_BOXES",
    "MAX_POINTS",
    "MAX_TEXTS",
    "NOT_AN_OBJECT",
    "RLE",
    "ApiError",
    "ErrorBody",
    "ImageResult",
    "Info",
    "PromptRequest",
    "PromptResult",
    "parse_prompt",
    "responses",
    "validation_message",
]

MAX_POINTS = 256
MAX_BOXES = 64
MAX_TEXTS = 16
MAX_TEXT_CHARS = 200
NOT_AN_OBJECT = "request body must be a JSON object of prompts"


class ApiError(HTTPException):
    """A request the server refuses; answered as ``{"error": detail}`` with ``status_code`` (and ``headers``)."""


Finite = Annotated[float, Field(allow_inf_nan=False)]


class PromptRequest(BaseModel):
    """Prompts against one uploaded image. At least one of points, boxes, texts."""

    model_config = ConfigDict(extra="forbid")
    points: list[Annotated[list[Finite], Field(min_length=2, max_length=2)]] | None = Field(
        None, max_length=MAX_POINTS, description="[[x, y], ...] in original pixels", examples=[[[320, 240]]]
    )
    labels: list[Literal[0, 1]] | None = Field(
        None, max_length=MAX_POINTS, description="one per point: 1 foreground, 0 background (default all 1)"
    )
    boxes: list[Annotated[list[Finite], Field(min_length=4, max_length=4)]] | None = Field(
        None, max_length=MAX_BOXES, description="[[x1, y1, x2, y2], ...] in original pixels; best mask per box"
    )
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]] | None = Field(
        None, max_length=MAX_TEXTS, description="phrases ranked against the masks with CLIP"
    )
    point_mode: Literal["merge", "individual"] = Field(
        "merge", description="merge: the original FastSAM rule; individual: every mask a point hits"
    )
    text_threshold: Finite | None = Field(
        None, description="select every mask with CLIP similarity >= this (default: the best one per text)"
    )
    include_records: bool = Field(True, description="include the selected records in the answer")


# The lists measured before validation; their limits are the ones declared above (one source).
LIST_LIMITS = {"points": MAX_POINTS, "labels": MAX_POINTS, "boxes": MAX_BOXES, "texts": MAX_TEXTS}


class RLE(BaseModel):
    size: list[int]
    counts: str


class PromptResult(BaseModel):
    id: str
    indices: list[int] = Field(description="selected everything-mode indices (union over all prompts), sorted")
    by_prompt: dict[str, Any] = Field(
        description="indices per prompt kind: points (list), boxes (one per box, -1 = none), texts (a list per text)"
    )
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
    max_prompt_bytes: int
    max_pixels: int
    max_pending: int
    cached_images: int
    cache_bytes: int


class ErrorBody(BaseModel):
    error: str


_WHY = {
    400: "malformed request (Content-Length, multipart body, too many multipart parts)",
    404: "unknown image id (never uploaded, or evicted from the result cache)",
    413: "request body or image over this server's limits",
    415: "the upload is not a readable image",
    422: "invalid prompt or parameter, or the model cannot segment this image",
    501: "text prompts, but the server has no CLIP weights",
    503: "busy: too many uploads are being decoded or segmented; retry after Retry-After seconds",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error codes a route can answer, each ``{"error": "..."}``."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorBody, "description": _WHY[code]}
        if code == 503:
            out[code]["headers"] = {
                "Retry-After": {
                    "required": True,
                    "description": "seconds to wait",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
    return out


def validation_message(errors: list[Any]) -> str:
    """One line from pydantic's error list: where (``points.0``) and what."""
    if not errors:
        return "invalid request"
    e = errors[0]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {(e.get('ctx') or {}).get('error', e.get('msg'))}"
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
    if not loc and e.get("type") in ("missing", "model_attributes_type", "dict_type", "model_type"):
        return NOT_AN_OBJECT
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid request: {loc + ': ' if loc else ''}{e.get('msg')}{more}"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_prompt(body: bytes, content_type: str | None) -> PromptRequest:
    """The :class:`PromptRequest` of a request body, or :class:`ApiError` 422 saying what is wrong.

    CPU-bound (JSON parse): call it from a worker thread. The lists and the keys are checked before
    pydantic sees the body, so the cost of a refusal does not grow with the number of items.
    """
    if content_type and not _is_json(content_type):
        raise ApiError(422, f"{NOT_AN_OBJECT} (Content-Type application/json, not {content_type[:64]!r})")
    if not body:
        raise ApiError(422, NOT_AN_OBJECT)
    try:
        data = json.loads(body)
    except RecursionError:  # [[[[...]]]]: the C decoder recurses once per level
        raise ApiError(422, "malformed JSON body: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8, integers over Python's digit limit
        raise ApiError(422, f"malformed JSON body: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(422, NOT_AN_OBJECT)
    extra = [k for k in data if k not in PromptRequest.model_fields]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ApiError(422, f"invalid request: {extra[0][:64]}: Extra inputs are not permitted{more}")
    for name, limit in LIST_LIMITS.items():
        value = data.get(name)
        if isinstance(value, list) and len(value) > limit:
            raise ApiError(422, f"invalid request: {name}: List should have at most {limit} items, not {len(value)}")
    try:
        return PromptRequest.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, validation_message(e.errors(include_input=False))) from None
