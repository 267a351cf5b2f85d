"""Package basics: version, build facts, thread control, `python -m hinm.info`."""

import subprocess
import sys

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


def test_info_module_prints_build_and_devices():
    out = subprocess.run([sys.executable, "-m", "hinm.info"], capture_output=True, text=True, check=True).stdout
    for key in ("hinm", "built_with_cuda", "cuda_architectures", "threads", "gpus"):
        assert key in out
    assert hinm.__version__ in out
    if hinm.built_with_cuda():
        assert "80" in out and "90a" in out
