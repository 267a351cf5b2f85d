"""`hinm prune MODEL --config CFG -o OUT`: prune a local model and write a compressed checkpoint.

MODEL is a sentence-transformers folder (modules.json), a transformers folder (config.json), or a
.safetensors file of weights (then every 2-D floating `*.weight` tensor is treated as a Linear
weight, and no calibration is possible). Writes OUT/model.hinm.safetensors (reload with
`hinm.load(path, model)` into the same architecture, or `hinm.load(path)` for a weights file),
OUT/report.json and OUT/report.md."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from ._plan import Unstructured, compress_scores, make_plan, parse_any_config, retained
from .sparsify import SparsifyReport, _incompatible, _search, sparsify_


def _read_calibration(path: str) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"calibration file {path} does not exist")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read calibration file {path}: {e}") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"calibration file {path} has no non-empty lines")
    return lines


def _load_folder(path: Path):
    """(model, kind) for a sentence-transformers or transformers folder."""
    from ._st import load_sentence_transformer, quiet_transformers

    try:
        if (path / "modules.json").is_file():
            return load_sentence_transformer(str(path)), "sentence-transformers"
        if (path / "config.json").is_file():
            quiet_transformers()
            from transformers import AutoModel

            return AutoModel.from_pretrained(str(path), local_files_only=True), "transformers"
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot load the model in {path}: {' '.join(str(e).split())[:300]}") from None
    raise ValueError(f"{path} is neither a sentence-transformers folder (modules.json) nor a transformers "
                     "folder (config.json)")


def _calibration(model, kind: str, path: Path, sentences: List[str]):
    if kind == "sentence-transformers":
        from ._st import calibration_batches, st_forward

        return calibration_batches(model, sentences), st_forward
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    batches = [dict(tok(sentences[i:i + 16], return_tensors="pt", padding=True, truncation=True, max_length=256))
               for i in range(0, len(sentences), 16)]
    return batches, None


def _distill_config(args):
    steps, seconds = getattr(args, "distill_steps", None), getattr(args, "distill_seconds", None)
    if steps is None and seconds is None:
        return None
    if not args.calibration:
        raise ValueError("--distill-steps/--distill-seconds need --calibration FILE (the text to distil on)")
    if Path(args.model).is_file():
        raise ValueError("distillation needs a model folder (a weights file cannot be run)")
    from .distillation import DistillConfig

    return DistillConfig(steps=steps, seconds=seconds)


def _token_mask(batch):
    return batch["attention_mask"].bool()


def run_prune(args) -> Dict[str, Any]:
    from .io import save

    model_path = Path(args.model)
    if not model_path.exists():
        raise ValueError(f"model path {args.model} does not exist")
    config = parse_any_config(args.config)
    if isinstance(config, Unstructured):
        raise ValueError("hinm prune writes compressed checkpoints; unstructured sparsity cannot be compressed")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {args.out} exists and is not a folder")
    if args.reconstruct and not args.calibration:
        raise ValueError("--reconstruct needs --calibration FILE")
    distill_config = _distill_config(args)
    start = time.perf_counter()
    if model_path.is_file():
        if args.calibration:
            raise ValueError("--calibration needs a model folder (a weights file cannot be run)")
        result = _prune_weights_file(model_path, config, args)
    else:
        model, kind = _load_folder(model_path)
        model.eval()
        batches = forward = None
        if args.calibration:
            batches, forward = _calibration(model, kind, model_path, _read_calibration(args.calibration))
        teacher = copy.deepcopy(model) if distill_config is not None else None
        report = sparsify_(model, config, targets=args.targets, ignore=args.ignore or (), permute=args.permute,
                           permute_effort=args.permute_effort,
                           calibration=batches, saliency=args.saliency, reconstruct=bool(args.reconstruct),
                           calibration_forward=forward, calibration_token_mask=_token_mask if batches else None,
                           progress=True)
        if not report.layers:
            raise ValueError("no layer was pruned (check --targets/--ignore and the config)")
        distilled = None
        if distill_config is not None:
            from .distillation import distill

            distilled = dataclasses.asdict(distill(model, teacher, batches, distill_config, forward=forward))
        out.mkdir(parents=True, exist_ok=True)
        save(model, out / "model.hinm.safetensors")
        result = dict(model=str(model_path), kind=kind, report=report.to_dict(), distillation=distilled)
        (out / "report.md").write_text(f"# hinm prune {model_path.name} → {config}\n\n{report.table()}\n")
    result["seconds"] = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=1))
    import sys

    sys.stderr.write(f"hinm prune: wrote {out}/ in {result['seconds']:.0f} s\n")
    return result


def _prune_weights_file(path: Path, config, args) -> Dict[str, Any]:
    from .io import save
    from .nn import compress_weight

    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise ValueError(f"cannot read {path} as safetensors: {type(e).__name__}: {e}") from None
    tpats = [re.compile(t) for t in (args.targets or [])]
    ipats = [re.compile(t) for t in (args.ignore or ())]
    out: Dict[str, Any] = {}
    rows = []
    for name, w in tensors.items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        is_linear = module is not None and w.dim() == 2 and w.is_floating_point()
        wanted = is_linear and (not tpats or any(p.search(module) for p in tpats)) \
            and not any(p.search(module) for p in ipats)
        reason = _incompatible(_Shape(w), config) if wanted else "not selected"
        if not wanted or reason:
            out[name] = w
            continue
        t = time.perf_counter()
        scores = w.detach().abs().double()
        ident = make_plan(scores, config)
        perm = _search(w, config, scores, args.permute, 0, None, args.permute_effort)
        plan = ident if perm is None else make_plan(scores, config, perm.row_perm, perm.col_orders)
        out[module + ".hinm"] = compress_weight(w.contiguous(), config, perm, compress_scores(plan, plan.mask))
        rows.append(dict(name=module, shape=list(w.shape), retained_identity=retained(scores, ident.mask),
                         retained=retained(scores, plan.mask), seconds=time.perf_counter() - t))
    if tpats and not rows:
        raise ValueError("the targets match no 2-D Linear weight in the file")
    if not rows:
        raise ValueError(f"{path} holds no 2-D '*.weight' tensor that {config} can compress")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    save(out, Path(args.out) / "model.hinm.safetensors")
    table = "\n".join(f"| {r['name']} | {r['shape'][0]}×{r['shape'][1]} | {r['retained_identity']:.4f} | "
                      f"{r['retained']:.4f} |" for r in rows)
    (Path(args.out) / "report.md").write_text(
        f"# hinm prune {path.name} → {config}\n\n| layer | shape | retained (identity) | retained |\n"
        f"|---|---|---|---|\n{table}\n")
    return dict(model=str(path), kind="safetensors", layers=rows)


class _Shape:
    """The bits of an nn.Linear that _incompatible reads, for a bare weight tensor."""

    def __init__(self, w: torch.Tensor) -> None:
        self.in_features = int(w.shape[1])
        self.weight = w
