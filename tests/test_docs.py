"""The docs stay true: every CLI page shows the command's current ``--help``, and the API pages cover
exactly ``fastsam.__all__``. (``mkdocs build --strict`` in CI checks the links and docstrings.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import fastsam

DOCS = Path(__file__).resolve().parents[1] / "docs"
COMMANDS = ["segment", "prompt", "convert", "synth", "val", "train", "export", "serve", "zeroshot", "edges", "label"]


def _help(*argv: str) -> str:
    """``fastsam ARGV --help`` as a 100-column terminal prints it."""
    import contextlib
    import io

    from fastsam.cli import build_parser

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            build_parser().parse_args([*argv, "--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().strip()


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_cli_page_shows_the_current_help(command: str | None) -> None:
    page = DOCS / "cli" / f"{command or 'index'}.md"
    text = page.read_text()
    shown = re.search(r"Output of `fastsam[^`]*--help`:\n\n```text\n(.*?)\n```", text, re.S)
    assert shown, f"{page}: no --help block"
    fresh = _help(*([command] if command else []))
    assert shown.group(1).strip() == fresh, f"{page} is stale: paste `COLUMNS=100 fastsam {command or ''} --help`"


def test_every_command_has_a_page() -> None:
    choices = re.search(r"\{([a-z,]+)\}", _help())
    assert choices and set(choices.group(1).split(",")) == set(COMMANDS), _help()


def test_api_pages_cover_exactly_the_public_api() -> None:
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented.update(re.findall(r"^::: fastsam\.(\w+)", page.read_text(), re.M))
    public = set(fastsam.__all__)
    assert documented == public - {"__version__"} or documented == public, documented ^ public
