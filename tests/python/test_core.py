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


def _omp_env_after_import(preset, torch_first):
    """(OMP_WAIT_POLICY, GOMP_SPINCOUNT) as a fresh interpreter sees them after `import hinm`."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(preset)
    code = ("import os\n" + ("import torch\n" if torch_first else "") +
            "import hinm\nprint(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return tuple(out.stdout.split())


def test_import_shortens_the_openmp_idle_spin_only_when_undecided():
    import hinm
    assert _omp_env_after_import({}, torch_first=False) == ("None", hinm._OMP_SPINCOUNT)
    assert _omp_env_after_import({"OMP_WAIT_POLICY": "passive"}, torch_first=False) == ("passive", "None")
    assert _omp_env_after_import({"GOMP_SPINCOUNT": "1000"}, torch_first=False) == ("None", "1000")
    assert _omp_env_after_import({}, torch_first=True) == ("None", "None")  # torch's OpenMP already loaded
