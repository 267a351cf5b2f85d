"""Framework-neutral array helpers: numpy in -> numpy out, torch in -> torch out, no copies of
contiguous inputs. torch is imported only when the caller passes a torch tensor."""

from __future__ import annotations

import sys
from typing import Any

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
