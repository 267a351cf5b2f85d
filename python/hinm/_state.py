"""Helpers for reading state dicts defensively: every missing, mistyped or inconsistent field is a
ValueError that names it, never a crash inside the C++ core."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ._arrays import as_array, dtype_name, is_torch, to_numpy


def field(sd: Mapping[str, Any], key: str, kind: str) -> Any:
    if not isinstance(sd, Mapping):
        raise TypeError(f"{kind} state dict must be a mapping, got {type(sd).__name__}")
    if key not in sd:
        raise ValueError(f"{kind} state dict is missing '{key}'")
    return sd[key]


def int_vector(sd: Mapping[str, Any], key: str, kind: str, length: int) -> list[int]:
    arr = to_numpy(as_array(field(sd, key, kind), key)).reshape(-1)
    if arr.shape != (length,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{kind} state dict: '{key}' must hold {length} integers, got {arr.dtype} {arr.shape}")
    return [int(x) for x in arr]


def array_field(sd: Mapping[str, Any], key: str, kind: str, shape: Sequence[int], dtypes: Sequence[str]) -> Any:
    arr = as_array(field(sd, key, kind), key)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{kind} state dict: '{key}' has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if dtype_name(arr) not in dtypes:
        raise ValueError(f"{kind} state dict: '{key}' has dtype {dtype_name(arr)}, expected {' or '.join(dtypes)}")
    return arr


def int_tensor(values: Sequence[int], like: Any) -> Any:
    """An int64 vector in the framework of `like` (state dicts hold arrays, not Python ints, so
    they save to safetensors as they are)."""
    a = np.asarray(values, dtype=np.int64)
    if not is_torch(like):
        return a
    import torch

    return torch.from_numpy(a)
