"""The CUDA build, checked without a GPU: the compiled kernels use sparse tensor cores and do not
spill. Skipped only when hinm was built without CUDA.

Needs nvcc (the build's compiler) and the PyPI wheels nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm (cuobjdump -sass calls nvdisasm). nvcc 13 prints the sparse f16/bf16 MMA with
f32 accumulation as `HMMA.SP.16832.F32` on both sm_80 and sm_90a."""

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import hinm
from hinm import _C

pytestmark = pytest.mark.skipif(not hinm.built_with_cuda(), reason="hinm was built without CUDA")

ROOT = Path(__file__).resolve().parents[2]
KERNEL_SOURCE = ROOT / "cuda" / "src" / "hinm_spmm.cu"
ARCHS = ("sm_80", "sm_90a")
KERNELS_PER_ARCH = 6  # {f16, bf16} x BM {32, 64, 128}
SPARSE_MMA = "HMMA.SP.16832.F32"


def _tool(name: str) -> str:
    """A CUDA tool from the nvidia-* PyPI wheels (site-packages/nvidia/*/bin), else from PATH."""
    found = []
    try:
        import nvidia

        for base in nvidia.__path__:
            found += sorted(glob.glob(os.path.join(base, "*", "bin", name)))
    except ImportError:
        pass
    path = shutil.which(name)
    if path:
        found.append(path)
    if not found:
        pytest.fail(f"{name} not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    return found[0]


def _nvcc() -> str:
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    pytest.fail("nvcc not found (hinm was built with CUDA, so the build machine had one)")


def _sass_by_arch(text: str) -> dict:
    out = {}
    for block in re.split(r"\n\s*arch = ", "\n" + text)[1:]:
        arch = block.split()[0]
        out[arch] = out.get(arch, "") + block
    return out


def test_built_kernels_use_sparse_tensor_cores():
    cuobjdump = _tool("cuobjdump")
    nvdisasm = _tool("nvdisasm")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    res = subprocess.run([cuobjdump, "-sass", _C.__file__], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    sass = _sass_by_arch(res.stdout)
    for arch in ARCHS:
        assert arch in sass, f"no {arch} SASS in {_C.__file__} (found {sorted(sass)})"
        assert SPARSE_MMA in sass[arch], f"no {SPARSE_MMA} in the {arch} SASS"
        # 2 k32 steps x 2 m16 tiles x 8 n8 tiles per stage, per kernel
        assert sass[arch].count(SPARSE_MMA) >= KERNELS_PER_ARCH * 32


def test_kernels_do_not_spill(tmp_path):
    cmd = [_nvcc(), "-std=c++17", "--expt-relaxed-constexpr", "-Xptxas", "-v", "-c", str(KERNEL_SOURCE),
           "-o", str(tmp_path / "k.o"), "-I", str(ROOT / "cpp" / "include"), "-I", str(ROOT / "cuda")]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    report = res.stderr + res.stdout
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\w+)'\n.*Function properties for \w+\n"
                         r"\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    for arch in ARCHS:
        assert sum(e[1] == arch for e in entries) == KERNELS_PER_ARCH, report
    spills = [e for e in entries if e[2:] != ("0", "0", "0")]
    assert not spills, f"local memory used (stack, spill stores, spill loads): {spills}"
