#!/usr/bin/env bash
# Installs a built wheel into a fresh virtual environment (no system packages) and checks, from a
# directory outside the source tree, that it imports, compresses and multiplies.
set -euo pipefail
WHEEL=$(realpath "$1")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WHEEL"
cd "$WORK"
"$WORK/venv/bin/python" - <<'PY'
import numpy as np
import hinm

w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
t = hinm.compress_nm(w, 2, 4)
dense = t.to_dense()
assert (np.count_nonzero(dense.reshape(64, -1, 4), axis=-1) == 2).all()
assert "site-packages" in hinm.__file__, hinm.__file__  # the installed wheel, not a source tree
if hasattr(hinm, "linear"):
    x = np.random.default_rng(1).standard_normal((3, 128)).astype(np.float32)
    y = hinm.linear(x, t)
    assert np.allclose(y, x @ dense.T, rtol=1e-4, atol=1e-4)
print("wheel smoke test passed:", hinm.__version__, "from", hinm.__file__)
PY
