"""Compressed checkpoints in safetensors.

`hinm.save(model_or_tensors, path)` writes a torch model's whole state dict (HiNMLinear layers
as their compressed buffers) or a dict of tensors / HiNMTensor / NMTensor; the header metadata holds
the hinm format version, the kind and config of every compressed entry, and a SHA-256 of all tensor
bytes. `hinm.load(path, model=None)` checks all of it and reloads bit-exactly: into `model` (its
nn.Linear layers that were compressed are swapped for HiNMLinear first), or as a dict.

Every unreadable, truncated, corrupted or mismatched file raises ValueError with the reason."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Union

import torch

from ._arrays import numpy_to_torch
from .nn import HiNMLinear, container_from_state, container_kind

FORMAT = "hinm"
FORMAT_VERSION = 1
_SEP = "."


def _safetensors():
    try:
        import safetensors.torch as st
        from safetensors import safe_open
    except ImportError:
        raise RuntimeError("hinm.save/hinm.load need safetensors: pip install safetensors") from None
    return st, safe_open


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return numpy_to_torch(x)


def _flatten(obj: Any) -> tuple:
    """(tensors, entries): entries maps a compressed entry's name to its kind and config."""
    tensors: Dict[str, torch.Tensor] = {}
    entries: Dict[str, dict] = {}
    if isinstance(obj, torch.nn.Module):
        for name, module in obj.named_modules():
            if isinstance(module, HiNMLinear):
                entries[name] = {"kind": module.kind, "config": str(module.config), "module": "HiNMLinear",
                                 "bias": module.bias is not None}
        tensors = dict(obj.state_dict())
    elif isinstance(obj, Mapping):
        for name, value in obj.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"hinm.save: names must be non-empty strings, got {name!r}")
            if isinstance(value, (torch.Tensor,)) or hasattr(value, "__array__") and not hasattr(value, "state_dict"):
                tensors[name] = _as_tensor(value)
                continue
            kind = container_kind(value)
            entries[name] = {"kind": kind, "config": str(value.config)}
            for key, t in value.state_dict().items():
                if t is not None:
                    tensors[name + _SEP + key] = _as_tensor(t)
    else:
        raise TypeError(f"hinm.save needs an nn.Module or a dict of tensors/compressed tensors, got {type(obj).__name__}")
    return tensors, entries


def save(model_or_tensors: Any, path: Union[str, os.PathLike]) -> None:
    """Write a model or a dict of tensors / compressed tensors to `path` (.safetensors)."""
    st, _ = _safetensors()
    tensors, entries = _flatten(model_or_tensors)
    # safetensors refuses shared storage; distinct contiguous copies are stored (bit-exact anyway)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "content": "model" if isinstance(model_or_tensors, torch.nn.Module) else "tensors",
            "entries": json.dumps(entries, sort_keys=True), "sha256": _digest(tensors)}
    from . import __version__

    meta["hinm_version"] = __version__
    st.save_file(tensors, str(path), metadata=meta)


def read_header(path: Union[str, os.PathLike]) -> dict:
    """The hinm metadata of a checkpoint (format, version, entries, ...); ValueError if unreadable."""
    _, safe_open = _safetensors()
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a hinm checkpoint (no hinm format tag in the header)")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise ValueError(f"{path}: hinm checkpoint format version {meta.get('format_version')!r}; "
                         f"this hinm reads version {FORMAT_VERSION}")
    try:
        meta["entries"] = json.loads(meta.get("entries", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupted header metadata ({e})") from None
    return meta


def _read_tensors(path: str, meta: dict) -> Dict[str, torch.Tensor]:
    st, _ = _safetensors()
    try:
        tensors = st.load_file(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read the tensors ({type(e).__name__}: {e}); the file is truncated or corrupted") from None
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch: the tensor data is corrupted")
    return tensors


def load(path: Union[str, os.PathLike], model: Optional[torch.nn.Module] = None) -> Any:
    """Read a checkpoint written by hinm.save.

    With `model`: its layers recorded as compressed are replaced by HiNMLinear modules and the whole
    state dict is loaded strictly (a missing or unexpected key, or a shape mismatch, is a ValueError);
    returns the model. Without: a dict name -> torch tensor / HiNMTensor / NMTensor (a model
    checkpoint without `model` returns its flat state dict with compressed layers as containers)."""
    path = str(path)
    meta = read_header(path)
    tensors = _read_tensors(path, meta)
    entries: Dict[str, dict] = meta["entries"]
    containers: Dict[str, Any] = {}
    for name, info in entries.items():
        prefix = name + _SEP + ("sparse_" if meta.get("content") == "model" else "")
        fields = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and _SEP not in k[len(prefix):]}
        try:
            containers[name] = container_from_state(info.get("kind"), fields)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: compressed entry {name!r} is invalid: {e}") from None
    if model is None:
        if meta.get("content") == "model":
            out = {k: v for k, v in tensors.items() if not any(k.startswith(n + _SEP + "sparse_") for n in entries)}
            out.update(containers)
            return out
        out = {k: v for k, v in tensors.items() if not any(k.startswith(n + _SEP) for n in entries)}
        out.update(containers)
        return out
    if meta.get("content") != "model":
        raise ValueError(f"{path}: holds loose tensors, not a model; call hinm.load(path) without a model")
    return _load_into(model, path, tensors, entries, containers)


def _load_into(model: torch.nn.Module, path: str, tensors: Dict[str, torch.Tensor], entries: Dict[str, dict],
               containers: Dict[str, Any]) -> torch.nn.Module:
    modules = dict(model.named_modules())
    for name, info in entries.items():
        current = modules.get(name)
        if not isinstance(current, (torch.nn.Linear, HiNMLinear)):
            what = "missing" if current is None else f"a {type(current).__name__}"
            raise ValueError(f"{path}: layer {name!r} was compressed but is {what} in the given model")
        c = containers[name]
        if (current.out_features, current.in_features) != tuple(int(s) for s in c.shape):
            raise ValueError(f"{path}: layer {name!r} is {current.out_features}×{current.in_features} in the model, "
                             f"{c.shape[0]}×{c.shape[1]} in the checkpoint")
        bias = tensors.get(name + _SEP + "bias")
        new = HiNMLinear.from_container(c, bias)
        parent, _, child = name.rpartition(_SEP)
        setattr(model.get_submodule(parent) if parent else model, child, new)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: does not match the model: {str(e).splitlines()[0]} "
                         f"{' '.join(str(e).split())[:400]}") from None
    return model
