"""`HiNMLinear`: a drop-in, inference-only replacement for nn.Linear whose weight is stored
compressed (HiNMTensor for hierarchical N:M, NMTensor for plain N:M) and multiplied by hinm's
sparse kernels (CPU, or CUDA for CUDA tensors).

The compressed container lives in the module as buffers named ``sparse_<field>`` (its state-dict
fields), so ``module.state_dict()``, ``load_state_dict`` and ``.to(device)`` work as for any torch
module; loading replaces the buffers exactly (shapes may differ) and validates the container.

Inference only: calling it while autograd needs a gradient (input requiring grad under
grad mode) raises RuntimeError — wrap inference in ``torch.no_grad()`` / ``torch.inference_mode()``;
to fine-tune, keep a dense nn.Linear with a mask (hinm.training) and compress afterwards.

`fold_mlp_permutations(model)` (run by hinm.sparsify_) moves each transformer MLP's output row
permutation into the next layer's column gather: same outputs bit for bit, no scattered store.
`prepack_(model)` gives every HiNMLinear a second copy of its weight in the CPU kernels' packed
layout (HiNMLinear.prepack): same outputs bit for bit, faster, twice the value memory."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ._arrays import numpy_to_torch
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
    return x if isinstance(x, torch.Tensor) else numpy_to_torch(x)


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
        self._pack_wanted = False
        self._packed: Optional[tuple] = None  # (buffer ids, hinm.PrepackedWeight)

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
        # keyed on the buffers' identities: .to()/load_state_dict/assignment replace the tensors, and
        # the cached container keeps the old ones alive, so an id cannot be reused while cached
        key = tuple(map(id, self._buffers.values()))
        cache = self._cache
        if cache is None or cache[0] != key:
            cache = self._cache = (key, container_from_state(self.kind, self.sparse_state()))
        return cache[1]

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

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_packed"] = None  # the kernels' handle does not copy or pickle; rebuilt at first use
        return state

    # ---- packed copy --------------------------------------------------------------------------
    def prepack(self, enabled: bool = True) -> "HiNMLinear":
        """Multiply through a second copy of the weight in the CPU kernels' packed layout
        (hinm.prepack): patterns with m = 2n at batches 1-12, and float32 2:4 weights at every batch,
        run faster (plain 2:4 1.05-1.16x at batch 64-1952 on an AVX-512 Xeon). Costs the values'
        memory once more (and a quarter of the index memory for 2:4). The copy is made at the next CPU
        forward and again after the buffers are replaced (load_state_dict, .to()); after an in-place
        edit of the buffers, the next forward raises RuntimeError until prepack() is called again.
        CUDA inputs ignore it. `enabled=False` drops the copy. Returns self."""
        self._pack_wanted = bool(enabled)
        self._packed = None
        return self

    def _kernel_weight(self, x: torch.Tensor) -> Any:
        container = self.container
        if not getattr(self, "_pack_wanted", False) or x.is_cuda:  # (modules pickled before it existed)
            return container
        key = self._cache[0]
        packed = getattr(self, "_packed", None)
        if packed is None or packed[0] != key:
            from . import ops

            packed = self._packed = (key, ops.prepack(container))
        return packed[1]

    # ---- compute ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # lean on purpose (it runs once per layer per batch): the container and its kernel-side
        # form are cached, 3-D activations are flattened as views, the bias is added in the
        # kernel's store, and hinm.linear does the remaining argument checks once
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError("HiNMLinear is inference-only (no backward): run it under torch.no_grad() or "
                               "torch.inference_mode(), or train a masked dense nn.Linear instead")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"HiNMLinear expects inputs of width {self.in_features}, got shape {tuple(x.shape)}")
        y = sparse_linear(x.reshape(-1, self.in_features), self._kernel_weight(x), self.bias)
        return y if x.dim() == 2 else y.view(*x.shape[:-1], self.out_features)

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
    """x [N, K]·Wᵀ + b through hinm's kernels (hinm.linear: float32 activations, float32
    accumulation whatever the stored dtype); the result comes back in x's dtype. Float32
    contiguous inputs and a float32 bias are passed through without copies."""
    from . import ops

    dtype = x.dtype
    if dtype != torch.float32:
        x = x.to(torch.float32)
    if not x.is_contiguous():
        x = x.contiguous()
    if bias is not None and bias.dtype != torch.float32:
        bias = bias.detach().to(torch.float32)
    y = ops.linear(x, container, bias=bias)
    return y if dtype == torch.float32 else y.to(dtype)


def fold_row_permutation(producer: HiNMLinear, consumer: HiNMLinear) -> bool:
    """Move `producer`'s row permutation into `consumer`'s column gather, when `consumer` is the
    only reader of `producer`'s output through elementwise ops (e.g. a transformer MLP:
    up-projection → GELU → down-projection). Afterwards `producer` writes its outputs in slot
    order (identity row_perm, bias permuted alike) and `consumer` reads input channel c from
    position inv(row_perm)[c] (col_idx remapped). Every output of the pair is bit-identical — the
    same products in the same order — but the producer's kernel no longer scatters its rows
    through the permutation: on 2 threads the scattered store costs ~30% of a 1536×384 layer
    (both threads write the same cache lines of each output row).

    Each module alone no longer equals its nn.Linear (their to_dense() are the permuted pair).
    Returns False, changing nothing, when the pair does not allow it (not both HiNM, widths differ,
    padded tiles, or the producer's row_perm is already the identity)."""
    if producer.kind != "hinm" or consumer.kind != "hinm" or consumer.in_features != producer.out_features:
        return False
    prod, cons = producer.sparse_state(), consumer.sparse_state()
    row_perm = prod["row_perm"]
    rows = producer.out_features
    ident = torch.arange(rows, dtype=row_perm.dtype, device=row_perm.device)
    if row_perm.shape != (rows,) or int(prod["values"].shape[0]) != rows or torch.equal(row_perm, ident):
        return False  # padded slots (rows not a multiple of v) would widen the output
    inverse = torch.empty_like(row_perm)
    inverse[row_perm] = ident
    col_idx = cons["col_idx"]
    new_prod = dict(prod, row_perm=ident)
    new_cons = dict(cons, col_idx=inverse[col_idx.long()].to(col_idx.dtype).contiguous())
    container_from_state("hinm", new_prod)  # validate both before changing either
    container_from_state("hinm", new_cons)
    producer._set_buffers(new_prod)
    consumer._set_buffers(new_cons)
    producer._cache = consumer._cache = None
    if producer.bias is not None:
        producer.bias = torch.nn.Parameter(producer.bias.detach()[row_perm].clone(), requires_grad=False)
    return True


def fold_mlp_permutations(model: torch.nn.Module) -> List[str]:
    """fold_row_permutation on every transformer MLP of `model` whose up- and down-projections are
    both HiNMLinear: a module with children ``intermediate`` (holding ``dense`` and an elementwise
    ``intermediate_act_fn``, as in BERT/RoBERTa/MiniLM) and ``output.dense``. Returns the names of
    the folded up-projections."""
    folded = []
    for name, module in model.named_modules():
        up = getattr(getattr(module, "intermediate", None), "dense", None)
        down = getattr(getattr(module, "output", None), "dense", None)
        inter = getattr(module, "intermediate", None)
        if not (isinstance(up, HiNMLinear) and isinstance(down, HiNMLinear)
                and hasattr(inter, "intermediate_act_fn") and _only_child(inter, up)):
            continue
        if fold_row_permutation(up, down):
            folded.append(f"{name}.intermediate.dense" if name else "intermediate.dense")
    return folded


def prepack_(model: torch.nn.Module, enabled: bool = True) -> int:
    """HiNMLinear.prepack(enabled) on every HiNMLinear of `model`; returns how many there are."""
    modules = [m for m in model.modules() if isinstance(m, HiNMLinear)]
    for m in modules:
        m.prepack(enabled)
    return len(modules)


def _only_child(parent: torch.nn.Module, child: torch.nn.Module) -> bool:
    """True if `child` is `parent`'s only submodule holding state (the activation may be a module)."""
    return all(m is child or not any(True for _ in m.parameters()) and not any(True for _ in m.buffers())
               for m in parent.children())


def compress_weight(weight: torch.Tensor, config: Any, perm: Any = None, scores: Any = None) -> Any:
    """The compressed container of `weight`: NMTensor for an NMConfig without permutation, else a
    HiNMTensor (a one-tile one for N:M with a column permutation) — see hinm.compress."""
    from .hinm_format import compress

    if not isinstance(config, (NMConfig, HiNMConfig)):
        raise ValueError(f"{config} cannot be stored compressed (only N:M and HiNM configs can)")
    return compress(weight, config, perm=perm, scores=scores)
