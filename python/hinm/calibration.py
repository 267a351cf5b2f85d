"""Calibration: run a model on sample inputs and collect, per nn.Linear, the input statistics that
activation-aware saliency and layer-wise reconstruction need — the Gram matrix XᵀX of the layer's
inputs (accumulated in float64) and, for sequential reconstruction, the cross term with the dense
model's inputs to the same layer.

`batches` is a non-empty sequence of model inputs; each is fed as model(x) (tensor), model(*x)
(tuple/list) or model(**x) (dict) unless `forward(model, batch)` is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

Forward = Callable[[torch.nn.Module, Any], Any]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted inputs are captured."""


@dataclass(eq=False)
class LayerStats:
    """Inputs seen by one Linear of width K over `tokens` calibration rows.

    hessian [K, K] float64: XᵀX of the inputs the layer receives (from the pruned model when
    sequential). cross [K, K]: Xᵀ X_dense (None = same as hessian); dense_hessian: X_denseᵀ X_dense
    (None = same as hessian)."""

    tokens: int
    hessian: torch.Tensor
    cross: Optional[torch.Tensor] = None
    dense_hessian: Optional[torch.Tensor] = None

    @property
    def col_norms(self) -> torch.Tensor:
        """‖x_j‖ per input column."""
        return self.hessian.diagonal().clamp_min(0).sqrt()

    @classmethod
    def from_inputs(cls, x: torch.Tensor, dense_x: Optional[torch.Tensor] = None, name: str = "layer") -> "LayerStats":
        acc = _Accumulator(x.shape[-1] if x.dim() else 0, name, dense_x is not None)
        acc.add(x, dense_x)
        return acc.result()


class _Accumulator:
    def __init__(self, width: int, name: str, paired: bool) -> None:
        self.width, self.name, self.paired = width, name, paired
        self.tokens = 0
        self.h = torch.zeros(width, width, dtype=torch.float64)
        self.c = torch.zeros(width, width, dtype=torch.float64) if paired else None
        self.hd = torch.zeros(width, width, dtype=torch.float64) if paired else None

    def _rows(self, x: torch.Tensor, what: str) -> torch.Tensor:
        x = validate_inputs(x, self.width, f"{self.name} ({what})")
        x = x.reshape(-1, self.width)
        return x.float() if x.dtype != torch.float64 else x

    def add(self, x: torch.Tensor, dense_x: Optional[torch.Tensor] = None) -> None:
        # one batch's product in its own precision (float32: a few thousand rows at most), the
        # running sums over batches in float64
        xs = self._rows(x, "inputs")
        self.h += (xs.T @ xs).double()
        if self.paired:
            xd = self._rows(dense_x, "dense inputs")
            if xd.shape != xs.shape:
                raise ValueError(f"{self.name}: dense and pruned models gave inputs of different shapes "
                                 f"{tuple(xd.shape)} vs {tuple(xs.shape)}")
            self.c += (xs.T @ xd).double()
            self.hd += (xd.T @ xd).double()
        self.tokens += xs.shape[0]

    def result(self) -> LayerStats:
        if self.tokens == 0:
            raise ValueError(f"calibration gave no input rows for {self.name}")
        return LayerStats(self.tokens, self.h, self.c, self.hd)


def validate_inputs(x: Any, width: int, name: str) -> torch.Tensor:
    """x as a floating tensor of shape [..., width] with finite entries, else ValueError."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: calibration inputs must be torch tensors, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != width:
        raise ValueError(f"{name}: expects inputs of width {width}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: calibration inputs must be floating point, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name}: calibration inputs are empty")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: calibration inputs contain NaN or infinity")
    return x.detach()


def default_forward(model: torch.nn.Module, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def check_batches(batches: Any) -> Sequence[Any]:
    if batches is None or isinstance(batches, (str, bytes)):
        raise ValueError("calibration must be a non-empty sequence of model inputs")
    batches = list(batches)
    if not batches:
        raise ValueError("calibration is empty: give at least one batch of model inputs")
    return batches


def _run(model: torch.nn.Module, batch: Any, index: int, forward: Forward) -> None:
    try:
        with torch.no_grad():
            forward(model, batch)
    except _Stop:
        pass
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's model on their data
        raise ValueError(f"calibration batch {index}: the model's forward failed: {type(e).__name__}: {e}") from None


def _run_capturing(model: torch.nn.Module, layers: Dict[str, torch.nn.Linear], batch: Any, index: int,
                   forward: Forward, stop_after: Optional[str], sink: Dict[str, torch.Tensor],
                   rows: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Runs the model on one batch with input hooks on `layers` (removed afterwards); returns sink."""
    handles = _capture(layers, stop_after, sink, rows)
    try:
        _run(model, batch, index, forward)
    finally:
        for h in handles:
            h.remove()
    return sink


def _identity(x: torch.Tensor) -> tuple:
    """What makes two *live* tensors the same data (only valid while both are referenced)."""
    return (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x.dtype)


def _capture(model_layers: Dict[str, torch.nn.Linear], stop_after: Optional[str], sink: Dict[str, torch.Tensor],
             rows: Optional[torch.Tensor] = None):
    handles = []
    # one masked copy per input tensor, so sharing stays visible. The cache holds the original too:
    # a freed input's memory is reused by later tensors of the same shape (same data_ptr), which
    # would otherwise hand a later layer an earlier layer's inputs.
    masked: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

    def make(name: str, layer: torch.nn.Linear):
        def hook(module, args):
            x = args[0] if args else None
            if rows is not None and isinstance(x, torch.Tensor) and tuple(x.shape[:-1]) == tuple(rows.shape):
                key = _identity(x)
                if key not in masked:
                    masked[key] = (x, x[rows])  # real tokens only: padding would pollute the statistics
                x = masked[key][1]
            sink[name] = validate_inputs(x, layer.in_features, f"layer '{name}'")
            if name == stop_after:
                raise _Stop()
        return hook

    for name, layer in model_layers.items():
        handles.append(layer.register_forward_pre_hook(make(name, layer)))
    return handles


def execution_groups(model: torch.nn.Module, layers: Dict[str, torch.nn.Linear], batch: Any,
                     forward: Forward = default_forward) -> List[List[str]]:
    """Layers in the order the model runs them, grouped when consecutive layers read the very same
    input tensor (q/k/v of an attention block): pruning one member cannot change another's input.
    Layers the forward never reaches are appended last, one per group."""
    seen: List[tuple] = []

    def make(name):
        def hook(module, args):
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and all(s[0] != name for s in seen):
                seen.append((name, _identity(x), x))  # x held: a freed tensor's address is reused
        return hook

    handles = [layer.register_forward_pre_hook(make(n)) for n, layer in layers.items()]
    try:
        _run(model, batch, 0, forward)
    finally:
        for h in handles:
            h.remove()
    groups: List[List[str]] = []
    for i, (name, key, _) in enumerate(seen):
        if i and key == seen[i - 1][1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    reached = {s[0] for s in seen}
    groups += [[n] for n in layers if n not in reached]
    return groups


def collect_stats(model: torch.nn.Module, layers: Dict[str, torch.nn.Linear], batches: Sequence[Any],
                  forward: Forward = default_forward, dense_model: Optional[torch.nn.Module] = None,
                  dense_layers: Optional[Dict[str, torch.nn.Linear]] = None,
                  stop_after: Optional[str] = None,
                  token_mask: Optional[Callable[[Any], torch.Tensor]] = None,
                  dense_inputs: Optional[List[Dict[str, torch.Tensor]]] = None) -> Dict[str, LayerStats]:
    """LayerStats for each of `layers` (name -> module of `model`) over all calibration batches.

    With `dense_model` (and its `dense_layers` under the same names) the pruned and dense models run
    on the same batches and the stats carry the cross terms sequential reconstruction needs.
    `dense_inputs` (from capture_inputs on the dense model) can stand in for running `dense_model`.
    `stop_after` names the last layer wanted: the forward pass ends there. `token_mask(batch)` gives a
    bool [batch, tokens] mask of real (non-padding) tokens; inputs of layers whose leading shape
    matches it keep only those rows."""
    batches = check_batches(batches)
    paired = dense_model is not None or dense_inputs is not None
    accs = {n: _Accumulator(l.in_features, f"layer '{n}'", paired) for n, l in layers.items()}
    shared: Dict[str, str] = {}
    for i, batch in enumerate(batches):
        rows = token_mask(batch).bool() if token_mask is not None else None
        got = _run_capturing(model, layers, batch, i, forward, stop_after, {}, rows)
        dense_got: Dict[str, torch.Tensor] = dense_inputs[i] if dense_inputs is not None else {}
        if dense_model is not None:
            _run_capturing(dense_model, dense_layers, batch, i, forward, stop_after, dense_got, rows)
        owner: Dict[tuple, str] = {}  # layers fed the very same tensor share one accumulator
        for name, x in got.items():
            # x and dense_got[name] are alive (held by got/dense_got): identities are unambiguous
            key = (_identity(x), _identity(dense_got[name]) if paired and name in dense_got else None)
            if key in owner:
                shared[name] = owner[key]
                continue
            owner[key] = name
            accs[name].add(x, dense_got.get(name) if paired else None)
    return {n: accs[shared.get(n, n)].result() for n in accs}


def capture_inputs(model: torch.nn.Module, layers: Dict[str, torch.nn.Linear], batches: Sequence[Any],
                   forward: Forward = default_forward,
                   token_mask: Optional[Callable[[Any], torch.Tensor]] = None) -> List[Dict[str, torch.Tensor]]:
    """The inputs of `layers` for every batch (name -> [rows, K]; layers fed the same tensor share
    one copy) — the dense model's side of sequential reconstruction, computed in one pass."""
    out = []
    for i, batch in enumerate(check_batches(batches)):
        rows = token_mask(batch).bool() if token_mask is not None else None
        out.append(_run_capturing(model, layers, batch, i, forward, None, {}, rows))
    return out
