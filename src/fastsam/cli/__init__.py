"""Command line: ``fastsam segment``, ``prompt``, ``convert``, ``export``, ``synth``, ``val``, ``train`` and ``serve``.

User errors (missing or corrupt files, bad options, a missing device, an output that would replace
an input) print one line on stderr and exit with 2; nothing is written before they are found.
One module per command (``_<command>.py``; segment and prompt share ``_images.py``), plus
``_parser`` (commands and options) and ``_values`` (value types).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from ..errors import FastSAMError
from ._parser import UsageError, build_parser, normalise_argv

__all__ = ["main"]

EXIT_USAGE = 2


def _dispatch(args: argparse.Namespace) -> int:
    # each command's module is imported only when it runs: `fastsam synth` never loads torch's exporter
    module = "_images" if args.command in ("segment", "prompt") else f"_{args.command}"
    command: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f"{__name__}.{module}"), args.command
    )
    return command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastsam`` command; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(normalise_argv(sys.argv[1:] if argv is None else argv, parser))
        return _dispatch(args)
    except (UsageError, FastSAMError) as exc:
        print(f"fastsam: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unwritable output directory, disk full ...
        print(f"fastsam: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("fastsam: error: out of memory (try a smaller --imgsz, --max-det or image)", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fastsam: interrupted", file=sys.stderr)
        return 130
