"""Layer-wise reconstruction under a structured mask (SparseGPT-style), in float64 torch.

The layer objective is ‖X_d Wᵀ − X Ŵᵀ‖² over the calibration rows: X_d the inputs of the dense
model, X those of the model being pruned (the same when inputs are dense, different when earlier
layers are already pruned — "sequential"). The target is first folded into W' = W·Cᵀ·H⁻¹ (C = XᵀX_d,
H = XᵀX + damping), which leaves an ordinary ‖(W' − Ŵ)X‖² problem.

Methods:
- "sparsegpt": walk each tile's columns in its plan order (dropped columns first, then kept ones in
  the tile's order) with the Cholesky factor of the damped inverse Hessian; the n:m choice of every
  group is made when the walk reaches it, from the already-updated weights (w²/[U]_jj²), so mask and
  update interact; vector pruning and permutations stay as planned. Batched over tiles.
- "refit": the exact least-squares weights of every row under a fixed mask.
- "sparsegpt+refit" (default): SparseGPT's mask, then the exact refit of its kept weights.
The result is never worse on the calibration objective than the plain masked weight: if a method
does not beat it (possible with heavy damping), the masked weight is kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._plan import Plan, Unstructured, _from_slots, _to_slots, _topk_stable, nm_group_mask
from .calibration import LayerStats
from .saliency import damped

METHODS = ("sparsegpt", "refit", "sparsegpt+refit")


@dataclass(frozen=True, eq=False)
class Reconstruction:
    weight: torch.Tensor   # float64 [R, K], zero outside mask
    mask: torch.Tensor     # bool [R, K], legal for the plan
    error_before: float    # relative calibration error of weight ⊙ plan.mask
    error_after: float     # relative calibration error of `weight`
    method: str            # the method whose result was kept ("mask" if none beat the plain mask)


def relative_error(weight: torch.Tensor, approx: torch.Tensor, stats: LayerStats) -> float:
    """‖X_d Wᵀ − X Âᵀ‖² / ‖X_d Wᵀ‖² from the statistics (undamped)."""
    w = weight.to(torch.float64)
    a = approx.to(torch.float64)
    h = stats.hessian
    hd = h if stats.dense_hessian is None else stats.dense_hessian
    c = h if stats.cross is None else stats.cross
    ref = float((w @ hd * w).sum())
    err = ref - 2.0 * float((a @ c * w).sum()) + float((a @ h * a).sum())
    return max(err, 0.0) / ref if ref > 0 else 0.0


def _inverse_cholesky(hp: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹ for a batch of SPD matrices."""
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hp)), upper=True)


def _blocks(k: int, start: int, size: int):
    if start:
        yield 0, start
    for i in range(start, k, size):
        yield i, min(i + size, k)


def sparsegpt(weight: torch.Tensor, plan: Plan, hessian: torch.Tensor, blocksize: int = 128,
              dtype: torch.dtype = torch.float32):
    """SparseGPT walk over `plan` with a damped Hessian, in `dtype` (float32 as in SparseGPT: the
    damping keeps it well conditioned). Returns (weight float64, mask bool)."""
    r, k, t, v = plan.rows, plan.cols, plan.tiles, plan.v
    seq = plan.seq
    idx = seq.unsqueeze(1).expand(t, v, k)
    wp = _to_slots(weight.to(dtype), plan.row_perm, t * v).reshape(t, v, k).gather(2, idx)
    u = _inverse_cholesky(hessian.to(dtype)[seq.unsqueeze(2), seq.unsqueeze(1)])
    keep = torch.zeros(t, v, k, dtype=torch.bool)
    group = plan.group
    m = group[1] if group else 1
    size = max(m, blocksize // m * m)
    for i1, i2 in _blocks(k, plan.n_dropped, size):
        w1 = wp[:, :, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        e1 = torch.zeros_like(w1)
        u1 = u[:, i1:i2, i1:i2]
        dd = u1.diagonal(dim1=1, dim2=2).unsqueeze(1)  # [t, 1, b]
        k1 = keep[:, :, i1:i2]
        if group is None:
            _choose_unstructured(w1, dd, k1, plan.config)
        for i in range(i2 - i1):
            c = i1 + i
            if group and c >= plan.n_dropped and (c - plan.n_dropped) % m == 0:
                k1[:, :, i:i + m] = nm_group_mask((w1[:, :, i:i + m] / dd[:, :, i:i + m]) ** 2, group[0], m)
            w = w1[:, :, i]
            q = w * k1[:, :, i]
            err = (w - q) / dd[:, :, i]
            w1[:, :, i:] -= err.unsqueeze(2) * u1[:, i, i:].unsqueeze(1)
            q1[:, :, i] = q
            e1[:, :, i] = err
        wp[:, :, i1:i2] = q1
        wp[:, :, i2:] -= torch.bmm(e1, u[:, i1:i2, i2:])
    out = torch.zeros(t, v, k, dtype=torch.float64).scatter_(2, idx, wp.to(torch.float64))
    mask = torch.zeros(t, v, k, dtype=torch.bool).scatter_(2, idx, keep)
    return (_from_slots(out.reshape(t * v, k), plan.row_perm, r),
            _from_slots(mask.reshape(t * v, k), plan.row_perm, r))


def _choose_unstructured(w1: torch.Tensor, dd: torch.Tensor, k1: torch.Tensor, config: Unstructured) -> None:
    score = ((w1 / dd) ** 2).reshape(-1)
    n_keep = int(round(config.density * score.numel()))
    flat = torch.zeros(score.numel(), dtype=torch.bool)
    flat[_topk_stable(score, n_keep)] = True
    k1.copy_(flat.reshape(k1.shape))


def refit(target: torch.Tensor, mask: torch.Tensor, hessian: torch.Tensor, max_bytes: int = 1 << 27,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row-wise least squares: for each row r with kept set S, Ŵ[r, S] minimises
    ‖(target_r − Ŵ_r) X‖² (+ damping) — i.e. solves H[S, S] Ŵ[r, S] = (H target_r)[S]. The batched
    Cholesky solves run in `dtype` (float32: damped systems of at most a few thousand unknowns)."""
    rhs = (target.to(torch.float64) @ hessian).to(dtype)
    hessian = hessian.to(dtype)
    out = torch.zeros(rhs.shape, dtype=torch.float64)
    counts = mask.sum(1)
    for s in torch.unique(counts).tolist():
        if s == 0:
            continue
        rows = torch.nonzero(counts == s).flatten()
        chunk = max(1, max_bytes // (8 * s * s))
        for j in range(0, rows.numel(), chunk):
            rr = rows[j:j + chunk]
            cols = torch.nonzero(mask[rr])[:, 1].reshape(rr.numel(), s)
            sub = hessian[cols.unsqueeze(2), cols.unsqueeze(1)]
            b = rhs[rr.unsqueeze(1), cols].unsqueeze(2)
            sol = torch.cholesky_solve(b, torch.linalg.cholesky(sub)).squeeze(2)
            out[rr.unsqueeze(1), cols] = sol.to(torch.float64)
    return out


def reconstruct(weight: torch.Tensor, plan: Plan, stats: LayerStats, method: str = "sparsegpt+refit",
                damp: float = 0.01, blocksize: int = 128) -> Reconstruction:
    """Reconstruct one layer's weight [R, K] under `plan` from its calibration statistics."""
    if method not in METHODS:
        raise ValueError(f"reconstruction method must be one of {', '.join(METHODS)}, got {method!r}")
    if stats.hessian.shape != (plan.cols, plan.cols):
        raise ValueError(f"calibration statistics have width {stats.hessian.shape[0]}, the layer {plan.cols}")
    w = weight.detach().to(torch.float64).cpu()
    h = damped(stats.hessian, damp)
    target = w if stats.cross is None else torch.cholesky_solve((w @ stats.cross.T).T, torch.linalg.cholesky(h)).T
    masked = w * plan.mask
    before = relative_error(w, masked, stats)
    best = (masked, plan.mask, before, "mask")
    mask = plan.mask
    candidates = []
    if method.startswith("sparsegpt"):
        new, mask = sparsegpt(target, plan, h, blocksize)
        candidates.append((new, mask, "sparsegpt"))
    if method.endswith("refit"):
        candidates.append((refit(target, mask, h), mask, method))
        if mask is not plan.mask and isinstance(plan.config, Unstructured):
            # SparseGPT's per-block unstructured choice can lose to the planned (per-layer) mask
            candidates.append((refit(target, plan.mask, h), plan.mask, "refit"))
    for new, msk, name in candidates:
        new = new * msk
        err = relative_error(w, new, stats)
        if err < best[2]:
            best = (new, msk, err, name)
    return Reconstruction(best[0], best[1], before, best[2], best[3])
