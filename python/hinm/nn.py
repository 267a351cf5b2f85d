"""`HiNMLinear`: a drop-in, inference-only replacement for nn.Linear whose weight is stored
compressed (HiNMTensor for hierarchical N:M, NMTensor for plain N:M) and multiplied by hinm's
sparse kernels (CPU, or CUDA for CUDA tensors).

The compressed container lives in the module as buffers named ``sparse_<field>`` (its state-dict
fields), so ``module.state_dict()``, ``load_state_dict`` and ``.to(device)`` work as for any torch
module; loading replaces the buffers exactly (shapes may differ) and validates the container.

Inference only: calling it while autograd needs a gradient (input requiring grad under
grad mode) raises RuntimeError — wrap inference in ``torch.no_grad()`` / ``torch.inference_mode()``;
to fine-tune, keep a dense nn.Linear with a mask (hinm.training) and compress afterwards."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .nm import NMTensor
from .pattern import HiNMConfig, NMConfig, parse_config

KINDS = ("hinm", "nm")
_PREFIX = "sparse_"


def _hinm_tensor_cls():
    from . import hinm_format

    return hinm_format.HiNMTensor


def container_kind(container: Any) -> str:
    if isinstance(container, NMTensor):
        return "nm"
    if type(container).__name__ == "HiNMTensor":
        return "hinm"
    raise TypeError(f"expected a HiNMTensor or NMTensor, got {type(container).__name__}")


def container_from_state(kind: str, sd: Dict[str, Any]) -> Any:
    """Rebuild (and validate) a container from its state-dict fields; ValueError if inconsistent."""
    if kind == "nm":
        return NMTensor.from_state_dict(sd)
    if kind == "hinm":
        return _hinm_tensor_cls().from_state_dict(sd)
    raise ValueError(f"unknown compressed-weight kind {kind!r} (expected one of {', '.join(KINDS)})")


def _as_torch(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(x.copy() if not x.flags.writeable else x)


class HiNMLinear(torch.nn.Module):
    """y = x·Wᵀ + b with W stored compressed. Build it with `from_dense` or `from_container`."""

    def __init__(self, container: Any, bias: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.kind = container_kind(container)
        self.out_features, self.in_features = (int(s) for s in container.shape)
        self._set_buffers({k: _as_torch(v) for k, v in container.state_dict().items() if v is not None})
        if bias is not None:
            bias = bias.detach().clone()
            if tuple(bias.shape) != (self.out_features,):
                raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)
        self._cache: Optional[tuple] = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dense(cls, linear: torch.nn.Linear, config: Any, perm: Any = None, scores: Any = None) -> "HiNMLinear":
        """Compress `linear.weight` under `config` (HiNMConfig, NMConfig or a pattern string).
        perm: a PermutationResult (row_perm, col_orders) for HiNM; scores: saliency [out, in]
        choosing the kept weights (|W| by default)."""
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"HiNMLinear.from_dense needs an nn.Linear, got {type(linear).__name__}")
        return cls(compress_weight(linear.weight.detach(), parse_config(config), perm, scores), linear.bias)

    @classmethod
    def from_container(cls, container: Any, bias: Optional[torch.Tensor] = None) -> "HiNMLinear":
        return cls(container, bias)

    # ---- buffers and container ----------------------------------------------------------------
    def _set_buffers(self, fields: Dict[str, torch.Tensor]) -> None:
        for name in [n for n in self._buffers if n.startswith(_PREFIX)]:
            del self._buffers[name]
        for key, value in fields.items():
            self.register_buffer(_PREFIX + key, value)

    def sparse_state(self) -> Dict[str, torch.Tensor]:
        return {n[len(_PREFIX):]: b for n, b in self._buffers.items() if n.startswith(_PREFIX) and b is not None}

    @property
    def container(self) -> Any:
        """The compressed weight (rebuilt when the buffers were moved or replaced)."""
        state = self.sparse_state()
        key = tuple((k, id(v), v.device) for k, v in state.items())
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, container_from_state(self.kind, state))
        return self._cache[1]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        fields = {k[len(prefix) + len(_PREFIX):]: v for k, v in state_dict.items()
                  if k.startswith(prefix + _PREFIX) and "." not in k[len(prefix):]}
        if fields:
            kind = "hinm" if any(k in fields for k in ("col_idx", "row_perm")) else "nm"
            try:
                device = next(iter(self.sparse_state().values())).device
                fields = {k: v.detach().clone().to(device) for k, v in fields.items()}
                container = container_from_state(kind, fields)
            except (TypeError, ValueError) as e:
                error_msgs.append(f"{prefix or 'HiNMLinear'}: bad compressed weight: {e}")
                return
            self.kind = kind
            self.out_features, self.in_features = (int(s) for s in container.shape)
            self._set_buffers(fields)
            self._cache = None
            bias = state_dict.get(prefix + "bias")
            if isinstance(bias, torch.Tensor) and self.bias is not None and bias.shape != self.bias.shape:
                self.bias = torch.nn.Parameter(bias.detach().clone().to(self.bias.device), requires_grad=False)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ---- compute ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("HiNMLinear is inference-only (no backward): run it under torch.no_grad() or "
                               "torch.inference_mode(), or train a masked dense nn.Linear instead")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"HiNMLinear expects inputs of width {self.in_features}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        y = sparse_linear(x.reshape(-1, self.in_features), self.container, self.bias)
        return y.reshape(*lead, self.out_features)

    def to_dense(self) -> torch.Tensor:
        """The masked dense weight [out, in], bit-exact."""
        return _as_torch(self.container.to_dense())

    def to_linear(self) -> torch.nn.Linear:
        lin = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.to_dense())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    @property
    def config(self) -> Any:
        return self.container.config

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kind={self.kind}, " \
               f"bias={self.bias is not None}"


def sparse_linear(x: torch.Tensor, container: Any, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x·Wᵀ + b through hinm's kernels (hinm.ops.linear: float32 activations, float32 accumulation
    whatever the stored dtype); the result comes back in x's dtype."""
    from . import ops

    dtype = x.dtype
    y = ops.linear(x.to(torch.float32).contiguous(), container,
                   bias=None if bias is None else bias.detach().to(torch.float32))
    return y if y.dtype == dtype else y.to(dtype)


def compress_weight(weight: torch.Tensor, config: Any, perm: Any = None, scores: Any = None) -> Any:
    """The compressed container of `weight`: NMTensor for an NMConfig without permutation, else a
    HiNMTensor (a one-tile one for N:M with a column permutation) — see hinm.compress."""
    from .hinm_format import compress

    if not isinstance(config, (NMConfig, HiNMConfig)):
        raise ValueError(f"{config} cannot be stored compressed (only N:M and HiNM configs can)")
    return compress(weight, config, perm=perm, scores=scores)
