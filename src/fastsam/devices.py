"""Torch device names checked before any work: a bad or absent device is a :class:`FastSAMError`.

``torch.device("bogus")`` raises a bare RuntimeError, and ``torch.device("cuda")`` on a machine
without a GPU succeeds and fails only at the first tensor moved there, deep inside a run. Both are
user errors, so they are caught here, where the device is chosen.
"""

from __future__ import annotations

import torch

from .errors import FastSAMError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device ``device`` names, if this machine has it; else raise :class:`FastSAMError`.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` and any other name torch knows, as long
    as that backend is usable here.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        if not isinstance(device, str) or not device.strip():
            raise FastSAMError(f"device must be a name such as 'cpu' or 'cuda:0', got {device!r}")
        try:
            dev = torch.device(device.strip())
        except (RuntimeError, ValueError):
            raise FastSAMError(f"unknown device {device!r}; expected e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FastSAMError(f"device {str(dev)!r}: CUDA is not available on this machine (use --device cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise FastSAMError(f"device {str(dev)!r}: this machine has {count} CUDA device(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise FastSAMError(f"device {str(dev)!r}: Apple MPS is not available on this machine")
    elif dev.type not in ("cpu",):
        mod = getattr(torch, dev.type, None)
        available = getattr(mod, "is_available", None)
        if available is None or not available():
            raise FastSAMError(f"device {str(dev)!r} is not available on this machine")
    return dev
