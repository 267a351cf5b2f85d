"""Package basics: version, build facts, thread control, `python -m hinm.info`."""

import subprocess
import sys

import pytest

import hinm


def test_version_and_build_facts():
    assert hinm.__version__.count(".") == 2
    assert isinstance(hinm.built_with_cuda(), bool)
    assert isinstance(hinm.cuda_available(), bool)
    if not hinm.built_with_cuda():
        assert not hinm.cuda_available()


def test_threads_round_trip():
    default = hinm.get_num_threads()
    assert default >= 1
    hinm.set_num_threads(1)
    assert hinm.get_num_threads() == 1
    hinm.set_num_threads(3)
    assert hinm.get_num_threads() == 3
    hinm.set_num_threads(0)
    assert hinm.get_num_threads() == default
    hinm.set_num_threads(-5)  # any n <= 0: the default
    assert hinm.get_num_threads() == default
    for bad in (1.5, True, "2", None):
        with pytest.raises(TypeError, match="n must be an integer"):
            hinm.set_num_threads(bad)
    with pytest.raises(ValueError, match="below 2"):
        hinm.set_num_threads(2**40)
    assert hinm.get_num_threads() == default


def test_info_module_prints_build_and_devices():
    out = subprocess.run([sys.executable, "-m", "hinm.info"], capture_output=True, text=True, check=True).stdout
    for key in ("hinm", "built_with_cuda", "cuda_architectures", "threads", "gpus"):
        assert key in out
    assert hinm.__version__ in out
    if hinm.built_with_cuda():
        assert "80" in out and "90a" in out


def _omp_policy_after_import(env_value, torch_first):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = ("import os\n" + ("import torch\n" if torch_first else "") +
            "import hinm\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_sets_passive_omp_wait_policy_only_when_undecided():
    assert _omp_policy_after_import(None, torch_first=False) == "passive"
    assert _omp_policy_after_import("active", torch_first=False) == "active"
    assert _omp_policy_after_import(None, torch_first=True) == "None"
