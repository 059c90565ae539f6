"""``fastsam segment`` / ``prompt`` over many images: this rank's share, ``--resume``, ``OUT/index.json``.

Every rank (one process alone, or each of ``torchrun``'s) builds the same input list and the same
output stems, and takes its share of them (:class:`fastsam.shard.Shard`: inputs ``r, r + W, ...``).
With ``--resume`` an input whose ``OUT/<stem>.json`` and ``.png`` both exist is skipped (both are
written atomically, the ``.png`` last, so existing means complete). ``OUT/.fastsam/`` holds the
run's bookkeeping while it runs: the options (``--resume`` refuses a run of other ones) and, under
torchrun, each rank's done file. Rank 0 waits for those, then writes ``OUT/index.json`` and removes
the bookkeeping, so one process and W processes leave the same files, byte for byte.

``OUT/index.json``: ``{"command", "options", "images": [...]}`` with, for each input in input
order, ``name``, ``stem`` and either ``files`` and ``records`` (their number) or ``error``. It holds
no timings, host names or ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import FastSAMError
from ..io.atomic import write_atomic
from ..shard import Shard, clear_done, options_key, wait_for_ranks, write_done

__all__ = ["INDEX", "STATE_DIR", "ImageRun", "run_options"]

#: The run's index, written last (by rank 0); its stem is never given to an input.
INDEX = "index.json"
#: The run's bookkeeping inside OUT while it runs.
STATE_DIR = ".fastsam"
#: Options that do not change what is written for an image.
_NOT_RESULTS = frozenset(
    {"sources", "out", "resume", "progress", "device", "batch", "rank_timeout", "max_pixels", "max_imgsz"}
)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide the outputs, as JSON values (paths and others as text)."""
    keep = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_RESULTS and not callable(v)}
    result: dict[str, Any] = json.loads(json.dumps(keep, default=str))
    return result


def _records(path: Path) -> int | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return len(data) if isinstance(data, list) else None


class ImageRun:
    """Share, resume and index of one run over ``items`` ((name, source) pairs) with output ``stems``."""

    def __init__(self, args: argparse.Namespace, items: list[tuple[str, Any]], stems: list[str], shard: Shard):
        self.out: Path = args.out
        self.state = self.out / STATE_DIR
        self.items, self.stems, self.shard = items, stems, shard
        self.resume: bool = args.resume
        self.wait_s = float(args.rank_timeout)
        self.options = run_options(args)
        self.key = options_key(self.options)
        self.results: dict[str, dict[str, Any]] = {}  # stem -> {"records": n} or {"error": message}
        self._created = not self.out.exists()
        self._started = False
        if self.resume:
            self._check_resume()

    def _check_resume(self) -> None:
        """Refuse to resume into an OUT whose recorded run had other options (checked before any work)."""
        for path, field in ((self.state / "options.json", "key"), (self.out / INDEX, "options")):
            try:
                recorded = json.loads(path.read_text())[field]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (recorded if field == "key" else options_key(recorded)) != self.key:
                raise FastSAMError(
                    f"{self.out} holds the outputs of a run with other options ({path.name}); --resume needs the "
                    "same ones (or drop --resume to replace them)"
                )
            return

    def outputs(self, stem: str) -> list[str]:
        from ._images import OUTPUT_SUFFIXES

        return [f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES]

    def _complete(self, stem: str) -> bool:
        return all((self.out / name).is_file() for name in self.outputs(stem))

    def begin(self) -> list[tuple[tuple[str, Any], str]]:
        """This rank's ((name, source), stem) pairs still to do."""
        mine = self.shard.take(list(zip(self.items, self.stems)))
        if self.resume:
            self._drop_temporaries({stem for _, stem in mine})
        todo = []
        for item, stem in mine:
            n = _records(self.out / f"{stem}.json") if self.resume and self._complete(stem) else None
            if n is None:
                todo.append((item, stem))
            else:
                self.results[stem] = {"records": n}
        if self.shard.world > 1 or len(todo) < len(mine):
            print(
                f"fastsam: {self.shard.describe()}: {len(todo)} of {len(self.items)} images to do "
                f"({len(mine) - len(todo)} of its {len(mine)} already done) -> {self.out}",
                file=sys.stderr,
            )
        return todo

    def _drop_temporaries(self, share: set[str]) -> None:
        """The temporary files a killed write of this rank's share left (``.<stem>.json.<pid>.<hex>.tmp``,
        :mod:`fastsam.io.atomic`); those of other ranks' stems may be in flight and are left alone."""
        if not self.out.is_dir():
            return
        for path in self.out.iterdir():
            name = path.name
            if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 5:
                target = name[1:].rsplit(".", 3)[0]  # <stem><suffix>
                stem, suffix = target.rsplit(".", 1) if "." in target else (target, "")
                if stem in share and f".{suffix}" in self.outputs(""):
                    path.unlink(missing_ok=True)

    def writing(self) -> None:
        """Before an image's outputs are written: OUT and the recorded options, once. Only now, so that
        a run refused earlier, or one whose every input fails, leaves nothing behind."""
        if not self._started:
            self.state.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state / "options.json", json.dumps({"key": self.key, "options": self.options}).encode())
            self._started = True

    def done(self, stem: str, records: int) -> None:
        self.results[stem] = {"records": records}

    def failed(self, stem: str, message: str) -> None:
        self.results[stem] = {"error": message}

    def _ready(self, results: dict[str, Any]) -> bool:
        return all("records" not in r or self._complete(stem) for stem, r in results.items())

    def finish(self) -> bool:
        """This rank's done file; on rank 0, the wait for the others and OUT/index.json. Returns
        whether the process is to exit with 0: on rank 0 (or alone) whether every input of the run has
        its outputs; the other ranks always (torchrun would stop rank 0 before its index when one of
        them failed: rank 0 reports their failures, in the index and its exit code)."""
        if self.shard.world > 1:
            write_done(self.state, self.shard, self.key, self.results)
            if self.shard.rank != 0:
                return True
            self.results.update(wait_for_ranks(self.state, self.shard, self.key, self._ready, self.wait_s))
        if not any("records" in r for r in self.results.values()):  # every input failed: no outputs, no index
            self._clean()
            if self._created:
                with contextlib.suppress(OSError):  # only if nothing else is there
                    self.out.rmdir()
            return False
        images = []
        for (name, _), stem in zip(self.items, self.stems):
            result = self.results.get(stem, {"error": "not processed"})
            entry: dict[str, Any] = {"name": name, "stem": stem}
            entry.update({"files": self.outputs(stem), **result} if "records" in result else result)
            images.append(entry)
        head = json.dumps({"command": self.options.get("command"), "options": self.options})[:-1]
        lines = ",\n".join(json.dumps(e) for e in images)  # one line per input: diff- and grep-friendly
        write_atomic(self.out / INDEX, f'{head}, "images": [\n{lines}\n]}}\n'.encode())
        self._clean()
        return all("error" not in e for e in images)

    def _clean(self) -> None:
        (self.state / "options.json").unlink(missing_ok=True)
        clear_done(self.state)
