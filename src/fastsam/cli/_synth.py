"""``fastsam synth``: deterministic synthetic training scenes in the SA-1B layout.

Checks what it can before loading a model or touching a file, so that a refused command changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import FastSAMError

__all__ = ["synth"]


def synth(args: argparse.Namespace) -> int:
    from ..data.synth import write_dataset

    if args.n < 0 or min(args.size) < 16:
        raise FastSAMError("--n must be >= 0 and --size H W at least 16 pixels each")
    paths = write_dataset(args.out, args.n, args.seed, size=(args.size[0], args.size[1]))
    print(f"wrote {len(paths)} images to {args.out}", file=sys.stderr)
    return 0
