"""An allow-listing unpickler for ultralytics checkpoints, usable as ``torch.load(pickle_module=...)``.

Released FastSAM files are pickles of whole ultralytics modules. Unpickling them normally imports
ultralytics and can run arbitrary code. Here, instead:

* torch's tensor/parameter rebuild functions, storages, dtypes and plain containers are allowed;
* every ``ultralytics.*`` class and every ``torch.nn`` module class becomes an inert placeholder
  (:class:`Inert`) that only records the state pickle hands to it, so its tensors can be read;
* anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises
  :class:`UnsafeCheckpointError` at lookup time, before it could ever be called.
"""

from __future__ import annotations

import pickle
import types
from typing import Any

import torch

from ..errors import UnsafeCheckpointError

__all__ = ["Inert", "Unpickler", "is_inert", "load", "loads"]


class Inert:
    """Stand-in for a pickled class: accepts any construction arguments and state, does nothing."""

    _pickled_module = ""
    _pickled_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        obj.__dict__["_state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    # Dicts of list subclasses pickled by ultralytics append/setitem into the object.
    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("_items", []).extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_mapping", {})[key] = value

    @property
    def pickled_name(self) -> str:
        return f"{self._pickled_module}.{self._pickled_name}"

    @property
    def state(self) -> Any:
        return self.__dict__["_state"]

    def __repr__(self) -> str:
        return f"<inert {self.pickled_name}>"


_INERT_CLASSES: dict[tuple[str, str], type[Inert]] = {}


def _inert_class(module: str, name: str) -> type[Inert]:
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(
            name.rsplit(".", 1)[-1], (Inert,), {"_pickled_module": module, "_pickled_name": name}
        )
    return _INERT_CLASSES[key]


def is_inert(obj: Any, name: str | None = None) -> bool:
    """True if ``obj`` is a placeholder (optionally of a pickled class whose name ends with ``name``)."""
    if not isinstance(obj, Inert):
        return False
    return name is None or obj._pickled_name.split(".")[-1] == name


def _safe_getattr(obj: Any, name: str, *default: Any) -> Any:
    # Protocol-2 pickles reference methods as getattr(Class, "method") (ultralytics stores
    # Detect.forward on its Segment head) and bound methods as getattr(instance, "method") (a fused
    # Conv stores its forward_fuse). Only placeholders may be looked into, and they answer with
    # another placeholder: a real getattr would let a pickle walk from an allowed function to its
    # globals and on to os.system.
    if (isinstance(obj, type) and issubclass(obj, Inert)) or isinstance(obj, Inert):
        return _inert_class(obj._pickled_module, f"{obj._pickled_name}.{name}")
    raise UnsafeCheckpointError(
        f"refusing to load: the checkpoint asks for getattr({type(obj).__name__}, {name!r}), "
        "which is not allowed (nothing was executed)"
    )


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor, used by protocol 0/1 pickles of plain objects.
    if isinstance(cls, type) and issubclass(cls, Inert):
        return cls.__new__(cls)
    raise UnsafeCheckpointError(f"refusing to load: copyreg._reconstructor of {cls!r} is not allowed")


def _path_like(*parts: Any) -> str:
    # Paths in training arguments: keep them as plain strings, never touch the file system.
    return "/".join(str(p) for p in parts)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("collections", "defaultdict"): __import__("collections").defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "getattr"): _safe_getattr,
    ("__builtin__", "set"): set,
    ("__builtin__", "getattr"): _safe_getattr,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("pathlib", "PosixPath"): _path_like,
    ("pathlib", "WindowsPath"): _path_like,
    ("pathlib", "PurePosixPath"): _path_like,
    ("pathlib", "PureWindowsPath"): _path_like,
    ("pathlib", "Path"): _path_like,
}
if hasattr(torch._utils, "_rebuild_tensor_v3"):
    _ALLOWED[("torch._utils", "_rebuild_tensor_v3")] = torch._utils._rebuild_tensor_v3


def _numpy_global(module: str, name: str) -> Any:
    # numpy scalars/arrays appear in training metrics; only their own reconstructors are allowed.
    import numpy as np

    if name == "dtype":
        return np.dtype
    if name == "ndarray":
        return np.ndarray
    core = getattr(np, "_core", None) or np.core
    if name in ("scalar", "_reconstruct"):
        return getattr(core.multiarray, name)
    raise KeyError(name)


_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
_INERT_PREFIXES = ("ultralytics.", "torch.nn.modules.")


def _fresh(fn: Any) -> Any:
    # A pickle may BUILD on whatever find_class returns; handing out the shared function object
    # would let a file set attributes (e.g. __defaults__) on torch's own rebuild functions.
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allow-listed objects or placeholders."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            value = _ALLOWED[(module, name)]
            return _fresh(value) if isinstance(value, types.FunctionType) else value
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in _NUMPY_MODULES:
            try:
                return _numpy_global(module, name)
            except KeyError:
                pass
        if module == "ultralytics" or module.startswith(_INERT_PREFIXES):
            return _inert_class(module, name)
        raise UnsafeCheckpointError(
            f"refusing to load: the checkpoint references {module}.{name}, which is not on the "
            "allow-list of a weight file (it was not executed)"
        )


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted :class:`Unpickler` (torch's legacy format calls this)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    import io

    return Unpickler(io.BytesIO(data), **kwargs).load()
