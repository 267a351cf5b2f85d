"""Framework-neutral array helpers: numpy in -> numpy out, torch in -> torch out, no copies of
contiguous inputs. torch is imported only when the caller passes a torch tensor."""

from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np

_TORCH_DTYPES = {
    "float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "float64": "float64",
    "int8": "int8", "uint8": "uint8", "int16": "int16", "int32": "int32", "int64": "int64",
    "uint16": "uint16", "uint32": "uint32", "bool": "bool",
}
WEIGHT_DTYPES = ("float32", "float16", "bfloat16", "int8")


def is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def dtype_name(x: Any) -> str:
    """'float32', 'bfloat16', ... for a numpy array or torch tensor."""
    if is_torch(x):
        return str(x.dtype).removeprefix("torch.")
    return np.dtype(x.dtype).name


def as_array(x: Any, name: str = "array") -> Any:
    """A numpy array or a (detached) torch tensor for x; other array-likes go through numpy
    (DLPack where available)."""
    if is_torch(x):
        return x.detach()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError) as e:
            raise TypeError(f"{name}: cannot import {type(x).__name__} through DLPack ({e})") from None
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - report any conversion failure the same way
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e


def is_cuda(x: Any) -> bool:
    return is_torch(x) and x.device.type == "cuda"


def device_of(x: Any) -> Any:
    return x.device if is_torch(x) else None


def empty(shape, dtype: str, like: Any) -> Any:
    """Uninitialised array in the framework (and device) of `like`."""
    if is_torch(like):
        import torch

        return torch.empty(tuple(shape), dtype=getattr(torch, _TORCH_DTYPES[dtype]), device=like.device)
    if dtype == "bfloat16":
        raise TypeError("bfloat16 arrays need torch (numpy has no bfloat16)")
    return np.empty(tuple(shape), dtype=dtype)


def zeros(shape, dtype: str, like: Any) -> Any:
    out = empty(shape, dtype, like)
    out[...] = 0
    return out


def from_numpy(a: np.ndarray, like: Any) -> Any:
    """Numpy data moved into the framework/device of `like`."""
    if is_torch(like):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(like.device)
    return a


def numpy_to_torch(a: np.ndarray) -> Any:
    """A numpy array as a contiguous torch tensor: sharing its memory when writeable, else a copy
    (torch has no read-only tensors; hinm's own index arrays are read-only)."""
    import torch

    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def to_numpy(x: Any) -> np.ndarray:
    if is_torch(x):
        if dtype_name(x) == "bfloat16":
            return x.detach().cpu().view(__import__("torch").int16).numpy().view(np.uint16)
        return x.detach().cpu().numpy()
    return np.asarray(x)


def contiguous(x: Any) -> Any:
    """Row-major contiguous version of x (x itself when it already is)."""
    if is_torch(x):
        return x.contiguous()
    return np.ascontiguousarray(x)


# --- edits in place and cached derived data ----------------------------------------------------
# The kernels cache data derived from a weight's arrays (bit masks or position words from the
# indices, device copies), so they must see when an array may have been edited in place since.

def edit_token(a: Any) -> Optional[tuple]:
    """What changes when `a` is edited in place: torch's version counter (shared by its views and
    detached aliases); for a numpy array, a constant when it is read-only all the way to the memory's
    owner, else None: an edit could not be seen, so data derived from `a` must not be kept."""
    if type(a) is not np.ndarray and is_torch(a):
        return ("torch", a._version)
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return None
        a = a.base
        if a is None:
            return _READ_ONLY
    return _READ_ONLY if isinstance(a, bytes) else None


_READ_ONLY = ("read-only",)


def freeze(a: Any) -> Any:
    """A numpy array the caller just allocated, made read-only (torch tensors carry a version
    counter instead and come back as they are)."""
    if isinstance(a, np.ndarray):
        a.flags.writeable = False
    return a


def frozen(a: Any) -> Any:
    """`a` itself when edits to it can be seen (edit_token is not None), else a read-only copy."""
    if edit_token(a) is not None:
        return a
    return freeze(np.array(a, copy=True))


def require_2d(x: Any, name: str) -> None:
    if len(x.shape) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(x.shape)}")


def require_weight_dtype(x: Any, name: str) -> str:
    dt = dtype_name(x)
    if dt not in WEIGHT_DTYPES:
        raise TypeError(f"{name}: dtype {dt} is not supported (expected one of {', '.join(WEIGHT_DTYPES)})")
    return dt


def scores_f32(scores: Any, shape, name: str = "scores") -> Any:
    """Scores as a float32/float64 array of the given shape (converted only if needed)."""
    scores = as_array(scores, name)
    if tuple(scores.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(scores.shape)}")
    dt = dtype_name(scores)
    if dt not in ("float32", "float64"):
        if dt == "bool" or not (dt.startswith("float") or dt.startswith("bfloat") or dt.startswith("int")
                                or dt.startswith("uint")):
            raise TypeError(f"{name}: dtype {dt} is not a numeric score type")
        scores = scores.float() if is_torch(scores) else scores.astype(np.float32)
    return contiguous(scores)
