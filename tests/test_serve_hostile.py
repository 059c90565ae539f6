"""Hostile and careless clients against ``fastsam serve``: floods of multipart parts, huge prompts,
clients that hang up mid-body, more concurrent uploads than the server takes, and an OpenAPI-driven
fuzz of every operation.

Each test starts its own app around a fake predictor (no network runs). Timing assertions are
relative (one request finishes before another), never tight absolute times, so a loaded machine
makes them slower, not flaky.
"""

from __future__ import annotations

import io
import json
import logging
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_serve import ColourScorer, FakePredictor, error, png_bytes, scene, scene_segments

from fastsam import Segments
from fastsam.serve import create_app
from fastsam.serve.server import BackgroundServer

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def world():
    rgb, _, masks = scene()
    return {"rgb": rgb, "masks": masks, "segments": scene_segments(masks), "png": png_bytes(rgb)}


@pytest.fixture()
def predictor(world):
    return FakePredictor(world["rgb"], world["segments"])


def form(*parts: tuple[str, bytes, str | None], boundary: str = "bnd") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of (field name, data, filename or None) parts, and its header."""
    out = bytearray()
    for name, data, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"content-type": f"multipart/form-data; boundary={boundary}"}


def tiny_fields(n: int) -> bytes:
    """A multipart body (boundary ``b``) of ``n`` one-byte fields and no file."""
    return b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n' * n + b"--b--\r\n"


class Raw:
    """One HTTP/1.1 request over a plain socket, sent in parts: what httpx cannot do (stop half-way,
    wait for ``100 Continue``, send without copying the body)."""

    def __init__(self, url: str) -> None:
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=60)

    def head(self, path: str, length: int, ctype: str = "application/octet-stream", expect: bool = False) -> None:
        lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Type: {ctype}", f"Content-Length: {length}"]
        if expect:
            lines.append("Expect: 100-continue")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names), body."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed after {buf[:200]!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]

    def upload(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """POST /api/images with ``Expect: 100-continue``: the body goes only if the server asks for it."""
        self.head("/api/images", len(body), expect=True)
        status, headers, data = self.response()
        if status != 100:
            return status, headers, data  # refused before the body was read
        self.sock.sendall(memoryview(body))
        return self.response()

    def close(self) -> None:
        self.sock.close()


# -- 10: multipart floods ----------------------------------------------------------------------------------
def test_multipart_part_count_is_capped(predictor, world):
    app = create_app(predictor)
    with TestClient(app) as c:
        fields = [(f"note{i}", b"x", None) for i in range(15)]
        body, headers = form(*fields, ("file", world["png"], "a.png"))  # 16 parts: a real (if chatty) form
        assert c.post("/api/images", content=body, headers=headers).status_code == 200
        body, headers = form(*fields, ("more", b"y", None), ("file", world["png"], "a.png"))
        msg = error(c.post("/api/images", content=body, headers=headers), 400)
        assert msg.startswith("multipart upload has more than 16 parts (this server's limit)")
        # the flood that stalled the server: 300,000 tiny fields, under the body limit
        flood = tiny_fields(300_000)
        assert len(flood) < 25 * 1024 * 1024
        r = c.post("/api/images", content=flood, headers={"content-type": "multipart/form-data; boundary=b"})
        assert error(r, 400) == msg
        # a part with 200 header lines, and one with a 20 kB header
        padded = b'--b\r\nContent-Disposition: form-data; name="file"\r\n' + b"X-Pad: p\r\n" * 200 + b"\r\nx"
        long = b'--b\r\nContent-Disposition: form-data; name="file"\r\nX-Pad: ' + b"p" * 20_000 + b"\r\n\r\nx"
        for body in (padded, long):
            r = c.post(
                "/api/images",
                content=body + b"\r\n--b--\r\n",
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
            msg = error(r, 400)
            assert msg.startswith("malformed multipart upload: Maximum header") or "bytes of headers" in msg, msg
    with TestClient(create_app(predictor, max_parts=2)) as c:
        body, headers = form(("a", b"1", None), ("b", b"2", None), ("file", world["png"], "a.png"))
        assert error(c.post("/api/images", content=body, headers=headers), 400).startswith(
            "multipart upload has more than 2 parts"
        )


def test_multipart_parsing_does_not_stall_other_requests(predictor):
    """A body that takes a second to parse (150,000 parts, allowed here) is parsed in a worker thread:
    /api/info is answered while the upload is still being worked on."""
    app = create_app(predictor, max_parts=10**6)
    body = tiny_fields(150_000)
    with BackgroundServer(app) as url:
        raw = Raw(url)
        try:
            raw.head("/api/images", len(body), "multipart/form-data; boundary=b")
            raw.sock.sendall(body)
            time.sleep(0.2)  # the server has the body now and is parsing it
            t = time.perf_counter()
            assert httpx.get(url + "/api/info", timeout=60).status_code == 200
            info_s = time.perf_counter() - t
            readable, _, _ = select.select([raw.sock], [], [], 0)
            assert not readable, f"the upload was answered before /api/info ({info_s:.2f} s): the loop was blocked"
            status, _, answer = raw.response()
        finally:
            raw.close()
    assert status == 400 and b"multipart upload has no file" in answer


def test_cpu_work_runs_outside_the_event_loop(predictor, world, monkeypatch):
    import asyncio

    from fastsam.serve import service

    where: dict[str, str] = {}

    def spy(name: str) -> None:
        real = getattr(service, name)

        def wrapper(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                where[name] = "event loop"
            except RuntimeError:
                where[name] = "worker thread"
            return real(*args, **kwargs)

        monkeypatch.setattr(service, name, wrapper)

    for name in ("multipart_file", "decode_image", "parse_prompt"):
        spy(name)
    with TestClient(create_app(predictor)) as c:
        key = c.post("/api/images", files={"file": ("a.png", world["png"], "image/png")}).json()["id"]
        assert c.post(f"/api/images/{key}/prompt", json={"points": [[10, 10]]}).status_code == 200
    assert where == dict.fromkeys(("multipart_file", "decode_image", "parse_prompt"), "worker thread")


# -- 11: huge prompts ---------------------------------------------------------------------------------------
def test_prompt_body_has_its_own_limit(predictor, world):
    body = json.dumps({"points": [[1.5, 2.5]] * 200_000}).encode()  # 2.4 MB: far under the upload limit
    with TestClient(create_app(predictor)) as c:  # default limits: 25 MiB uploads, 1 MiB prompts
        r = c.post("/api/images/0123/prompt", content=body, headers=JSON)
        assert error(r, 413) == "prompt body exceeds this server's limit of 1048576 bytes"
        assert c.get("/api/info").json()["max_prompt_bytes"] == 1024 * 1024

        def chunks():  # no Content-Length: counted as it arrives
            yield from (body[i : i + 65536] for i in range(0, len(body), 65536))

        assert error(c.post("/api/images/0123/prompt", content=chunks(), headers=JSON), 413).startswith("prompt body")
    with TestClient(create_app(predictor, max_prompt_bytes=1000)) as c:
        key = c.post("/api/images", content=world["png"]).json()["id"]  # uploads keep their own limit
        assert prompt_ok(c, key)
        r = c.post(f"/api/images/{key}/prompt", content=json.dumps({"points": [[1, 1]] * 200}), headers=JSON)
        assert error(r, 413) == "prompt body exceeds this server's limit of 1000 bytes"


def prompt_ok(c: TestClient, key: str) -> bool:
    return c.post(f"/api/images/{key}/prompt", json={"points": [[10, 10]]}).status_code == 200


@pytest.mark.parametrize(
    ("field", "item", "limit"), [("points", ["a"], 256), ("labels", 7, 256), ("boxes", [1], 64), ("texts", 5, 16)]
)
def test_long_prompt_lists_are_refused_by_length_before_their_items_are_validated(
    predictor, world, monkeypatch, field, item, limit
):
    from fastsam.serve import schemas

    validated = []
    real = schemas.PromptRequest.model_validate
    monkeypatch.setattr(schemas.PromptRequest, "model_validate", lambda data: validated.append(1) or real(data))
    n = 100_000
    body = json.dumps({field: [item] * n}).encode()
    assert len(body) < 1024 * 1024  # under the prompt body limit: it is the length that is refused
    with TestClient(create_app(predictor)) as c:
        key = c.post("/api/images", content=world["png"]).json()["id"]
        got = error(c.post(f"/api/images/{key}/prompt", content=body, headers=JSON), 422)
        assert got == f"invalid request: {field}: List should have at most {limit} items, not {n}"
        assert validated == []  # no item was looked at
        assert prompt_ok(c, key) and validated == [1]  # (the spy works)


def test_prompt_bodies_that_break_a_json_parser(predictor, world):
    with TestClient(create_app(predictor)) as c:
        key = c.post("/api/images", content=world["png"]).json()["id"]
        url = f"/api/images/{key}/prompt"
        deep = b"[" * 200_000 + b"]" * 200_000
        assert error(c.post(url, content=deep, headers=JSON), 422).startswith("malformed JSON body")
        huge_int = b'{"points": [[' + b"9" * 5000 + b", 1]]}"
        assert error(c.post(url, content=huge_int, headers=JSON), 422).startswith("malformed JSON body")
        bad_utf8 = b'{"texts": ["\xff\xfe"]}'
        assert error(c.post(url, content=bad_utf8, headers=JSON), 422).startswith("malformed JSON body")
        keys = json.dumps({f"k{i}": 0 for i in range(50_000)}).encode()
        assert error(c.post(url, content=keys, headers=JSON), 422).startswith(
            "invalid request: k0: Extra inputs are not permitted (and 49999 more)"
        )
        form_post = c.post(url, content=b"points=1", headers={"content-type": "text/plain"})
        assert error(form_post, 422).startswith("request body must be a JSON object of prompts")
        assert prompt_ok(c, key)


# -- 12: clients that hang up -------------------------------------------------------------------------------
class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("target", ["upload", "prompt"])
def test_client_that_hangs_up_mid_body_is_not_a_server_error(predictor, world, target):
    app = create_app(predictor)
    with BackgroundServer(app) as url:
        key = httpx.post(url + "/api/images", content=world["png"], timeout=20).json()["id"]
        path = "/api/images" if target == "upload" else f"/api/images/{key}/prompt"
        seen = Records()
        loggers = [logging.getLogger(name) for name in ("fastsam.serve", "uvicorn")]  # uvicorn.error propagates
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(seen)
        loggers[0].setLevel(logging.DEBUG)
        try:
            raw = Raw(url)
            raw.head(path, 100_000, "image/png" if target == "upload" else "application/json")
            raw.sock.sendall(world["png"][:1000] if target == "upload" else b'{"points": [[1, ')
            time.sleep(0.1)
            raw.close()  # gone, 99 kB short
            deadline = time.monotonic() + 10
            while not seen.records and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)  # anything else it would log
        finally:
            for lg, level in zip(loggers, levels):
                lg.removeHandler(seen)
                lg.setLevel(level)
        # the server goes on, and its upload slot was given back
        assert httpx.get(url + "/api/info", timeout=20).json()["status"] == "ok"
        assert httpx.post(url + "/api/images", content=world["png"], timeout=20).status_code == 200
        assert app.state.service.slots.used == 0
    bad = [r for r in seen.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not bad, [f"{r.name} {r.levelname}: {r.getMessage()}" for r in bad]
    assert len(seen.records) == 1 and "went away" in seen.records[0].getMessage()


# -- 13: bounded uploads in flight --------------------------------------------------------------------------
def test_uploads_beyond_max_pending_are_refused_before_their_body_is_read(world):
    pred = FakePredictor(world["rgb"], world["segments"])
    pred.gate = threading.Event()  # the network blocks until the gate opens
    app = create_app(pred, max_pending=2)
    slots = app.state.service.slots
    images = [png_bytes(np.full((20, 20, 3), v, np.uint8)) for v in range(8)]
    with BackgroundServer(app) as url, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(httpx.post, url + "/api/images", content=images[i], timeout=30) for i in range(2)]
        deadline = time.monotonic() + 10
        while (pred.calls < 1 or slots.used < 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pred.calls == 1 and slots.used == 2  # one in the network, one decoded and waiting for it
        for image in images[2:]:
            raw = Raw(url)
            try:
                status, headers, body = raw.upload(image)  # never asked for its body: no 100 Continue
            finally:
                raw.close()
            assert status == 503 and headers["retry-after"] == "1"
            assert json.loads(body) == {
                "error": "server busy: 2 uploads are already being decoded or segmented "
                "(this server's limit); retry in 1 s"
            }
        r = httpx.post(url + "/api/images", content=images[2], timeout=30)  # httpx sends the body: also 503
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert slots.peak == 2
        pred.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert slots.used == 0
        assert httpx.post(url + "/api/images", content=images[2], timeout=30).status_code == 200
    assert pred.max_active == 1 and slots.peak == 2


class FlatPredictor:
    """No masks for any image, after a pause that stands in for the network."""

    def segment(self, image, config=None):
        time.sleep(0.1)
        return Segments.empty(image.shape[:2])


def bmp(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="BMP")  # no compression: cheap to make, all of it to decode
    return buf.getvalue()


@pytest.mark.slow
def test_memory_of_concurrent_large_uploads_is_bounded(tmp_path):
    """8 clients upload 12-megapixel images at once; the server holds at most 2 of them (the others
    retry after Retry-After), and the process's peak RSS growth stays under the ceiling stated in
    fastsam.serve.app: max_pending x (2 x body + 14 bytes per pixel) + the cached results."""
    psutil = pytest.importorskip("psutil")
    h, w, clients, max_pending = 3000, 4000, 8, 2
    base = bmp(np.tile(np.arange(w, dtype=np.uint8)[None, :, None], (h, 1, 3)))
    offset = len(base) - h * w * 3  # BMP header size: the pixel bytes follow it
    bodies = []
    for i in range(clients):  # 8 different images (a different first pixel), without 8 encodes
        b = bytearray(base)
        b[offset] = i
        bodies.append(bytes(b))
    del base
    app = create_app(
        FlatPredictor(), max_body_bytes=40 * 1024 * 1024, max_pixels=h * w, max_pending=max_pending, cache_items=1
    )
    per_slot = 2 * len(bodies[0]) + 14 * h * w
    cached = 2 * 3 * h * w  # the cached result and the one replacing it
    ceiling = max_pending * per_slot + cached + 64 * 2**20  # + sockets, threads, allocator slack
    proc = psutil.Process()
    with BackgroundServer(app) as url:
        assert httpx.post(url + "/api/images", content=png_bytes(np.zeros((8, 8, 3), np.uint8))).status_code == 200
        start = proc.memory_info().rss
        peak, done = start, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss)
                time.sleep(0.003)

        def client(body: bytes) -> tuple[int, int]:
            refused = 0
            while True:
                raw = Raw(url)
                try:
                    status, headers, _ = raw.upload(body)
                finally:
                    raw.close()
                if status != 503:
                    return status, refused
                refused += 1
                time.sleep(int(headers["retry-after"]) * 0.25)  # a quarter: keeps the test short, still 503s

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        try:
            with ThreadPoolExecutor(clients) as pool:
                answers = list(pool.map(client, bodies))
        finally:
            done.set()
            sampler.join()
        elapsed = time.perf_counter() - t
    growth = peak - start
    print(
        f"{clients} uploads of {h * w / 1e6:.0f} MP in {elapsed:.1f} s, {sum(r for _, r in answers)} refusals; "
        f"peak RSS growth {growth / 2**20:.0f} MiB, ceiling {ceiling / 2**20:.0f} MiB"
    )
    assert [s for s, _ in answers] == [200] * clients
    assert sum(r for _, r in answers) > 0 and app.state.service.slots.peak == max_pending
    assert growth < ceiling


# -- the whole API, fuzzed ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_openapi_fuzz_finds_no_server_error_and_no_undeclared_response(world):
    """schemathesis generates requests from /openapi.json (valid ones, then invalid ones) against the
    running server: no 5xx, every status, content type, body and header as the schema declares."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    pred = FakePredictor(world["rgb"], world["segments"])
    app = create_app(pred, clip_scorer=ColourScorer(), max_body_bytes=300_000, max_pixels=100_000)
    statuses: dict[str, set[int]] = {}
    with BackgroundServer(app) as url:
        known = httpx.post(url + "/api/images", content=world["png"], timeout=20).json()["id"]
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} == {
            "GET /api/info",
            "POST /api/images",
            "GET /api/images/{image_id}",
            "POST /api/images/{image_id}/prompt",
        }
        for op in operations:
            has_inputs = len(op.path_parameters) + len(op.query) + len(op.body) > 0
            for mode in (
                (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
            ):

                @settings(
                    max_examples=25,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=op.as_strategy(generation_mode=mode), real=st.booleans())
                def fuzz(case, real):  # called below, in this iteration: op and mode are this iteration's
                    if real and "image_id" in (case.path_parameters or {}):
                        case.path_parameters["image_id"] = known  # a prompt against an image that exists
                    if real and op.label == "POST /api/images" and mode is GenerationMode.POSITIVE:  # noqa: B023
                        case.body, case.media_type = world["png"], "image/png"  # a real upload
                    response = case.call(base_url=url, timeout=30)
                    statuses.setdefault(op.label, set()).add(response.status_code)  # noqa: B023
                    case.validate_response(response, checks=checks)

                fuzz()
            if op.label == "POST /api/images/{image_id}/prompt":
                # 25 generated bodies may all be refused (422) depending on hypothesis' draw, so valid
                # prompts on the uploaded image are also sent, and checked against the schema like the rest
                for body in ({"points": [[60, 60]], "labels": [1]}, {"boxes": [[10, 10, 200, 200]]}):
                    case = op.Case(path_parameters={"image_id": known}, body=body, media_type="application/json")
                    response = case.call(base_url=url, timeout=30)
                    statuses.setdefault(op.label, set()).add(response.status_code)
                    case.validate_response(response, checks=checks)
        assert httpx.get(url + "/api/info", timeout=20).json()["status"] == "ok"
    assert 200 in statuses["POST /api/images"] and 200 in statuses["POST /api/images/{image_id}/prompt"]
    print({k: sorted(v) for k, v in statuses.items()})
