"""``fastsam serve``: a web page and an HTTP API for everything mode and prompts.

Needs the ``serve`` extra (``pip install 'fastsam[serve]'``: FastAPI, uvicorn, python-multipart).
:func:`create_app` builds the ASGI app around a predictor; :func:`run` is the command.
"""

from __future__ import annotations

from .app import create_app
from .server import run

__all__ = ["create_app", "run"]
