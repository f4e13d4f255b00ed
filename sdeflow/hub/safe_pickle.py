"""A pickle reader that builds tensors, plain containers and inert records, and refuses every other global.

Pickles name functions that the loader calls; a file from elsewhere can name `os.system` as easily
as `torch._utils._rebuild_tensor_v2`. This reader resolves only the names in `ALLOWED`, maps the
persistence hooks of EDM's pickles (which would `exec` the source code stored in the file) to
`Record`s that keep the state and run nothing, and stops with one line at any other name.
"""

from __future__ import annotations

import collections
import io
import pickle

import numpy as np
import torch


class Record:
    """An object of a class we do not import: its class name and the state the pickle gave it, nothing run."""

    def __init__(self, class_name: str = "", state=None):
        self.class_name, self.state = class_name, state

    def __setstate__(self, state):  # pickle's BUILD on an object made by NEWOBJ
        self.state = state

    def __repr__(self) -> str:
        return f"Record({self.class_name})"


def _persistent(meta) -> Record:
    # EDM's torch_utils.persistence._reconstruct_persistent_obj(meta) would exec(meta["module_src"]); we keep the state
    # only.
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("class_name"), str)
        or not isinstance(meta.get("state"), dict)
    ):
        raise pickle.UnpicklingError("a persistent object without a class name and state")
    return Record(meta["class_name"], meta["state"])


def _record_class(class_name: str):
    class Named(Record):  # made by pickle's NEWOBJ (`__new__` only), then given its state by BUILD
        def __new__(cls, *args):
            obj = object.__new__(cls)
            obj.class_name, obj.state = class_name, None
            return obj

    Named.__name__ = class_name
    return Named


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


def _storage(data: bytes):
    # torch's own _load_from_bytes unpickles with weights_only=False; the bytes are a saved storage, which weights_only
    # reads.
    return torch.load(io.BytesIO(data), weights_only=True)


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar(),  # numpy scalars (EDM's blocks keep skip_scale = np.sqrt(0.5))
    ("numpy._core.multiarray", "scalar"): _numpy_scalar(),
    ("dnnlib.util", "EasyDict"): dict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    # torch's own containers, which EDM's networks hold (pickled by class, then given their __dict__).
    ("torch.nn.modules.container", "ModuleDict"): _record_class("ModuleDict"),
    ("torch.nn.modules.container", "ModuleList"): _record_class("ModuleList"),
    ("torch.nn.modules.container", "Sequential"): _record_class("Sequential"),
}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which is not data; only tensors, plain containers and "
                "network records are read"
            )
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference (a torch.save file, not a pickle)")


def safe_load(file) -> object:
    """Unpickle `file` (a path or a binary stream) with `SafeUnpickler`."""
    if hasattr(file, "read"):
        return SafeUnpickler(file).load()
    with open(file, "rb") as f:
        return SafeUnpickler(f).load()


def tensors(record: Record, prefix: str = "") -> dict:
    """The state dict of a module kept as a `Record`: its parameters and persistent buffers, and its children's, by
    dotted name."""
    state = record.state if isinstance(record.state, dict) else {}
    out = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value
    skip = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in skip:
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(tensors(child, f"{prefix}{name}."))
    return out
