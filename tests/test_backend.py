"""tinyhw.backend: cupy is optional, imported lazily, and a GPU-less cupy is handled."""
import subprocess
import sys
import types

import numpy as np
import pytest

from tinyhw import backend


def test_importing_tinyhw_does_not_import_cupy():
    code = "import sys, tinyhw, tinyhw.functional, tinyhw.nn; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def fresh_backend(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", False)
    return monkeypatch


def test_cupy_installed_without_a_gpu_means_cpu(fresh_backend):
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: False
    fresh_backend.setitem(sys.modules, "cupy", fake)
    assert backend.gpu_available() is False
    assert backend.normalize_device("auto") == "cpu"
    assert backend.get_array_module(np.ones(2)) is np
    with pytest.raises(RuntimeError, match="no usable GPU"):
        backend.to_device(np.ones(2), "gpu")


def test_cupy_whose_import_fails_means_cpu(fresh_backend):
    fresh_backend.setitem(sys.modules, "cupy", None)   # makes `import cupy` raise ImportError
    assert backend.gpu_available() is False


def test_cupy_whose_driver_check_raises_means_cpu(fresh_backend):
    fake = types.ModuleType("cupy")

    def broken():
        raise RuntimeError("CUDA driver version is insufficient")
    fake.is_available = broken
    fresh_backend.setitem(sys.modules, "cupy", fake)
    assert backend.gpu_available() is False


def test_device_names():
    assert backend.normalize_device("cuda") == "gpu"
    assert backend.device_of(np.ones(1)) == "cpu"
    with pytest.raises(ValueError, match="device: expected 'cpu', 'gpu', 'cuda' or 'auto', got 'tpu'"):
        backend.normalize_device("tpu")
