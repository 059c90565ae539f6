"""Command line: ``fastsam segment``, ``prompt``, ``convert``, ``export``, ``synth``, ``val``, ``train`` and ``serve``.

User errors (missing or corrupt files, bad options, a missing device, an output that would replace
an input) print one line on stderr and exit with 2; nothing is written before they are found.
One module per group of commands: :mod:`._parser` (arguments and their types), :mod:`._images`
(segment, prompt), :mod:`._export` (export), :mod:`._commands` (the others).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import FastSAMError
from ._parser import UsageError, build_parser, normalise_argv

__all__ = ["main"]

EXIT_USAGE = 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("segment", "prompt"):
        from . import _images

        return _images.segment(args) if args.command == "segment" else _images.prompt(args)
    if args.command == "export":
        from ._export import export

        return export(args)
    from . import _commands

    return getattr(_commands, args.command)(args)


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
