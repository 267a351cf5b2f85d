"""The C++ library installs as a CMake package that a downstream project can find and link."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_find_package_consumer_builds_and_runs(tmp_path):
    if not (ROOT / "CMakeLists.txt").exists():
        pytest.skip("needs the source tree")
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    build, prefix, consumer = tmp_path / "build", tmp_path / "prefix", tmp_path / "consumer"
    # CPU-only library build keeps this test fast; the CUDA build is covered by the wheel.
    _run(["cmake", "-S", ROOT, "-B", build, *gen, "-DHINM_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release"], env=env)
    _run(["cmake", "--build", build], env=env)
    _run(["cmake", "--install", build, "--prefix", prefix], env=env)
    assert (prefix / "include" / "hinm" / "hinm.hpp").exists()
    _run(["cmake", "-S", ROOT / "tests" / "consumer", "-B", consumer, *gen, f"-DCMAKE_PREFIX_PATH={prefix}"], env=env)
    _run(["cmake", "--build", consumer], env=env)
    out = _run([consumer / "consumer"])
    assert "consumer: kept 64 of 128" in out
