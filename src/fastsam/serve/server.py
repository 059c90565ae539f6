"""Running the app: the ``fastsam serve`` command and a background server for tests and benchmarks."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..config import PredictConfig
from ..errors import FastSAMError
from .app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PENDING, DEFAULT_MAX_PIXELS, DEFAULT_MAX_PROMPT_BYTES, create_app

__all__ = ["BackgroundServer", "bind", "load_scorer", "run"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one). Raises OSError if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP (else Nagle + delayed ACK
    # add ~40 ms to every keep-alive request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def load_scorer(clip_weights: Path | None, clip_model: str | None, device: str) -> Any:
    """The CLIP scorer for text prompts: ``clip_weights`` if given, else the shipped demo CLIP if this
    installation has one, else None (the server then answers text prompts with an error)."""
    from ..text import get_scorer
    from ..weights import default_clip_path

    if clip_weights is None:
        try:
            clip_weights = default_clip_path()
        except FastSAMError:
            return None
    return get_scorer(clip_weights, clip_model, device) if clip_model else get_scorer(clip_weights, device=device)


def run(
    model: Path | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    imgsz: int | None = None,
    conf: float = PredictConfig.conf,
    iou: float = PredictConfig.iou,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_prompt_bytes: int = DEFAULT_MAX_PROMPT_BYTES,
    max_pending: int = DEFAULT_MAX_PENDING,
    clip_weights: Path | None = None,
    clip_model: str | None = None,
    backend: str | None = None,
    half: bool = False,
    post: str = "auto",
    compile: bool = False,
) -> int:
    """Load the model (default: the shipped demo model), bind, and serve until interrupted.

    ``imgsz`` None uses the size the model was trained at (recorded in its weight file), else 1024.
    The limits are those of :func:`fastsam.serve.create_app`; they are checked before the model loads.
    """
    import uvicorn

    from ..predictor import FastSAM
    from ..train.evaluate import default_imgsz
    from ..weights import default_model_path

    for name, value in (
        ("max_pixels", max_pixels),
        ("max_body_bytes", max_body_bytes),
        ("max_prompt_bytes", max_prompt_bytes),
        ("max_pending", max_pending),
    ):
        if value < 1:
            raise FastSAMError(f"{name} must be >= 1, got {value}")
    predictor = FastSAM(
        model if model is not None else default_model_path(),
        device=device,
        cache_size=0,
        backend=backend,
        half=half,
        post=post,
        compile=compile,
    )
    config = PredictConfig(imgsz=default_imgsz(predictor) if imgsz is None else imgsz, conf=conf, iou=iou)
    scorer = load_scorer(clip_weights, clip_model, device)
    app = create_app(
        predictor,
        clip_scorer=scorer,
        config=config,
        max_pixels=max_pixels,
        max_body_bytes=max_body_bytes,
        max_prompt_bytes=max_prompt_bytes,
        max_pending=max_pending,
    )
    sock = bind(host, port)  # before uvicorn, so a taken port is one clear error line
    shown = f"[{host}]" if ":" in host else host
    print(
        f"fastsam: serving on http://{shown}:{sock.getsockname()[1]}/ (imgsz {config.imgsz}, "
        f"text prompts {'on' if scorer is not None else 'off: no CLIP weights'}; Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


class BackgroundServer:
    """A uvicorn server for ``app`` on a free loopback port, in a daemon thread (tests, benchmarks).

    ``with BackgroundServer(app) as url: ...`` — ``url`` is ``http://127.0.0.1:<port>``.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.sock = bind(host, 0)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
