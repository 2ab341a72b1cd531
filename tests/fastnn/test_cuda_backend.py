"""device="cuda" / "auto" on Sequential and the estimators (fastnn.cuda_backend).

On a machine without an NVIDIA GPU these run in Numba's CUDA simulator (tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1), unchanged on a real GPU. The simulator runs one Python thread per GPU
thread (about 0.1-0.5 s per 256-thread GEMM launch here), so the shapes are tiny: a 5-4-3
network, 6 samples, batch 4 (a full batch and a shorter last one), 2 epochs = 4 steps a fit.

Tolerance of CPU vs GPU fits: both start from the same weights (same seed) and visit the rows
in the same order (the GPU fit draws its shuffles from the model's generator on the host, as
the CPU fit does), so they compute the same arithmetic up to summation order: the GPU GEMMs
sum in TILE-wide shared-memory slabs, the CPU's BLAS in its own blocking, and the losses
reduce rows in a tree. That is a few ulps per dot product, compounded over 4 steps:
rtol 1e-5 for float32 (eps 1.2e-7) and 1e-12 for float64 (eps 2.2e-16).
"""
import warnings

import numpy as np
import pytest

from fastnn import Dense, Sequential, optim
from fastnn import cuda_backend
from fastnn.callbacks import Callback
from fastnn.cuda_backend import DeviceUnavailableError

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)), rng.integers(0, 3, n)


def _model(device, dtype="float32", reg=None):
    return Sequential([Dense(4, "tanh", input_dim=5, kernel_regularizer=reg), Dense(3)],
                      seed=3, dtype=dtype, device=device)


class _Recorder(Callback):
    """What a host callback sees of the weights after each epoch."""

    def __init__(self):
        self.params = []

    def on_epoch_end(self, epoch, logs=None):
        self.params.append(self.model.params.copy())


def _fit(device, dtype, make_opt, reg=None, sample_weight=None, metrics=(), **kw):
    x, y = _data()
    m = _model(device, dtype, reg)
    m.compile(make_opt(), "softmax_cross_entropy", metrics=list(metrics))
    rec = _Recorder()
    h = m.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[rec],
              sample_weight=sample_weight, **kw)
    return m, h, rec


@pytest.mark.parametrize("dtype, make_opt, reg, weighted", [
    ("float32", lambda: optim.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
     None, False),
    ("float64", lambda: optim.Adam(0.01), 0.01, True),
], ids=["float32-sgd-momentum", "float64-adam-l2-weights"])
def test_cuda_fit_matches_cpu(dtype, make_opt, reg, weighted):
    sw = np.array([1.0, 0.5, 2.0, 1.0, 0.0, 1.5]) if weighted else None
    metrics = ["accuracy"] if dtype == "float32" else []  # on the GPU: one more forward
    cpu_m, cpu_h, cpu_rec = _fit("cpu", dtype, make_opt, reg, sw, metrics)
    gpu_m, gpu_h, gpu_rec = _fit("cuda", dtype, make_opt, reg, sw, metrics)
    assert gpu_m._device == "cuda" and cpu_m._device == "cpu"
    tol = TOL[dtype]
    # the host params reflect the device weights after the fit, and after every epoch for a
    # host callback
    np.testing.assert_allclose(gpu_m.params, cpu_m.params, **tol)
    assert gpu_m.params.dtype == np.dtype(dtype)
    for a, b in zip(gpu_rec.params, cpu_rec.params):
        np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(gpu_h.history["loss"], cpu_h.history["loss"], **tol)
    assert gpu_h.history.keys() == cpu_h.history.keys()
    for key in cpu_h.history:
        np.testing.assert_allclose(gpu_h.history[key], cpu_h.history[key], **tol)
    # the optimizer state came back too (a later CPU fit or a checkpoint continues from it)
    for key, value in cpu_m.optimizer.state().items():
        np.testing.assert_allclose(gpu_m.optimizer.state()[key], value, **tol)
    # the layers' W and b still view the host buffer
    np.testing.assert_array_equal(gpu_m.layers[0].W.ravel(), gpu_m.params[:20])
    # inference on the GPU equals the CPU's on the same weights
    x, y = _data(5, seed=1)
    np.testing.assert_allclose(gpu_m.predict(x), cpu_m.predict(x), **tol)
    ev_gpu, ev_cpu = gpu_m.evaluate(x, y), cpu_m.evaluate(x, y)
    assert ev_gpu.keys() == ev_cpu.keys()
    np.testing.assert_allclose(ev_gpu["loss"], ev_cpu["loss"], **tol)
    for key in ev_cpu:
        np.testing.assert_allclose(ev_gpu[key], ev_cpu[key], **tol)


def test_cuda_batch_size_one_matches_cpu_fused_epoch():
    """batch_size=1 with plain SGD runs the per-sample kernel on both: kernels.cuda.sgd_epoch
    (one launch an epoch) and kernels.cpu.sgd_epoch: the same SGD steps."""
    x, y = _data(2)
    fits = []
    for device in ("cpu", "cuda"):
        m = _model(device, "float64")
        m.compile(optim.SGD(0.05), "mse")
        t = np.eye(3)[y]
        h = m.fit(x, t, epochs=1, batch_size=1, verbose=0)
        fits.append((m.params.copy(), h.history["loss"]))
    np.testing.assert_allclose(fits[1][0], fits[0][0], **TOL["float64"])
    np.testing.assert_allclose(fits[1][1], fits[0][1], **TOL["float64"])


def test_cuda_validation_logs_match_cpu():
    x, y = _data()
    xv, yv = _data(3, seed=2)
    logs = []
    for device in ("cpu", "cuda"):
        m = _model(device, "float64")
        m.compile(optim.SGD(0.1), "softmax_cross_entropy")
        logs.append(m.fit(x, y, epochs=1, batch_size=8, verbose=0,
                          validation_data=(xv, yv)).history)
    assert logs[0].keys() == logs[1].keys()
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], **TOL["float64"])


# --------------------------------------------------------------------------- CUDA arrays

class _ForeignCudaArray:
    """A stand-in for a torch or cupy CUDA tensor: it exposes only __cuda_array_interface__
    (version 3), here over a simulator device array's memory (on a real GPU, over a numba
    device array's)."""

    def __init__(self, dev):
        if cuda_backend.simulator_enabled():
            host = dev._ary  # the simulator's "device" memory is this NumPy array
            self.__cuda_array_interface__ = {
                "shape": host.shape, "typestr": host.dtype.str, "strides": None,
                "data": (host.__array_interface__["data"][0], False), "version": 3}
        else:
            self.__cuda_array_interface__ = dev.__cuda_array_interface__
        self._keep = dev


def test_cuda_arrays_accepted_without_copy():
    from numba import cuda
    x = np.random.default_rng(4).normal(size=(5, 5)).astype(np.float32)
    m = _model("cuda")
    expected = m.predict(x)
    dev = cuda.to_device(x)
    foreign = _ForeignCudaArray(dev)
    assert cuda_backend.is_cuda_array(dev) and cuda_backend.is_cuda_array(foreign)
    assert not cuda_backend.is_cuda_array(x)
    # zero copy: the view aliases the foreign memory
    view = cuda_backend.as_device_array(foreign)
    view[0, 0] = 42.0
    assert dev.copy_to_host()[0, 0] == 42.0
    view[0, 0] = x[0, 0]
    # a float32 C-contiguous CUDA array is used where it lies
    assert m._check_x(foreign, "x", 5) is not None
    for arr in (dev, foreign):
        np.testing.assert_allclose(m.predict(arr), expected, rtol=1e-6, atol=1e-7)
    # a cpu model copies a CUDA array to the host
    cpu_m = _model("cpu")
    np.testing.assert_allclose(cpu_m.predict(foreign), cpu_m.predict(x), rtol=1e-6)


def test_cuda_array_validation():
    from numba import cuda
    m = _model("cuda")
    bad = np.zeros((2, 5), np.float32)
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        m.predict(cuda.to_device(bad))
    with pytest.raises(ValueError, match="features"):
        m.predict(cuda.to_device(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="2-D"):
        m.predict(cuda.to_device(np.zeros(5, np.float32)))
    # float64 rows for a float32 model are cast on the device
    x64 = np.random.default_rng(5).normal(size=(2, 5))
    np.testing.assert_allclose(m.predict(cuda.to_device(x64)), m.predict(x64), rtol=1e-6)


# --------------------------------------------------------------------------- device selection

def test_device_resolution_in_this_environment():
    kind, _ = cuda_backend._probe()
    assert Sequential([Dense(2)]).device == "cpu"
    auto = _model("auto")
    assert auto.device == "auto"
    assert auto._device == ("cuda" if kind == "gpu" else "cpu")
    if cuda_backend.simulator_enabled():
        assert auto._device == "cpu"  # the simulator never counts as a GPU for "auto"
    assert _model("CUDA")._device == "cuda"  # the simulator (CI) or a real GPU


def test_device_argument_validation():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        _model("tpu")
    with pytest.raises(TypeError, match="device must be"):
        _model(0)


def test_cuda_without_gpu_raises_clear_error(monkeypatch):
    monkeypatch.setattr(cuda_backend, "_probe", lambda: (None, "no NVIDIA GPU was found"))
    with pytest.raises(DeviceUnavailableError, match="no usable GPU") as info:
        _model("cuda")
    assert "device='cpu'" in str(info.value)
    assert _model("auto")._device == "cpu"  # auto falls back quietly
    assert _model("cpu")._device == "cpu"


def test_cuda_without_numba_cuda_says_to_install(monkeypatch):
    def missing():
        raise ImportError("No module named 'numba.cuda'")

    monkeypatch.setattr(cuda_backend, "_load_numba_cuda", missing)
    with pytest.raises(DeviceUnavailableError, match=r"fastnn-numba\[cuda\]") as info:
        _model("cuda")
    assert "device='cpu'" in str(info.value)
    assert _model("auto")._device == "cpu"


def test_estimator_device_passes_through(monkeypatch):
    from fastnn.neural_network import MLPClassifier  # scikit-learn: in the test extra
    x, y = _data(8)
    clf = MLPClassifier((3,), max_iter=2, device="cpu")
    assert clf.get_params()["device"] == "cpu"
    clf.fit(x, y)
    monkeypatch.setattr(cuda_backend, "_probe", lambda: (None, "no NVIDIA GPU was found"))
    with pytest.raises(DeviceUnavailableError, match="device='cpu'"):
        MLPClassifier((3,), max_iter=2, device="cuda").fit(x, y)
    with pytest.raises(ValueError, match="device"):
        MLPClassifier((3,), device="tpu").fit(x, y)


def test_device_kept_in_config_and_checkpoints(tmp_path):
    from fastnn import io
    m = _model("auto")
    assert m.get_config()["device"] == "auto"
    io.save(m, tmp_path / "m.npz")
    loaded = io.load(tmp_path / "m.npz")
    assert loaded.device == "auto" and loaded._device == m._device
    assert io.load(tmp_path / "m.npz", device="cpu").device == "cpu"
    np.testing.assert_array_equal(loaded.params, m.params)


def test_cuda_divergence_restores_weights_and_state():
    """A non-finite epoch loss on the GPU restores the device snapshot, copies it to the host
    and raises, as on the CPU."""
    from fastnn.models import DivergenceError
    x = np.random.default_rng(6).normal(size=(2, 3))
    m = Sequential([Dense(2, input_dim=3)], device="cuda")
    m.compile(optim.SGD(1e10, momentum=0.5), "mse")
    p0 = m.params.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the simulator's NumPy overflows
        with pytest.raises(DivergenceError, match="restored"):
            m.fit(x, np.full((2, 2), 1e30), epochs=2, batch_size=2, verbose=0)
    np.testing.assert_array_equal(m.params, p0)
    np.testing.assert_array_equal(m.optimizer.velocity, 0)



@pytest.mark.parametrize("dtype, loss", [("float32", "softmax_cross_entropy"),
                                         ("float64", "mse")])
def test_fused_and_per_layer_cuda_fits_agree(monkeypatch, dtype, loss):
    """A narrow network trains through kernels.cuda.minibatch_epoch's fused path; with
    cuda_backend.FUSED_MLP off the same fit runs its per-layer kernels. Same arithmetic up to
    summation order: the fused kernel sums each dot product serially over the fan-in, the
    per-layer GEMM in TILE-wide slabs (and the fused softmax sums a row serially, the per-row
    kernel in a 32-lane tree); the weight gradients use the same weight_grad kernel on both
    paths. A few ulps per step over 4 steps: the CPU-vs-GPU tolerance (TOL) covers it."""
    from fastnn.kernels import cuda as kc
    x, y = _data()
    target = y if loss == "softmax_cross_entropy" else np.eye(3)[y]
    fits = []
    for fused in (True, False):
        monkeypatch.setattr(cuda_backend, "FUSED_MLP", fused)
        m = _model("cuda", dtype, reg=0.01)
        m.compile(optim.Adam(0.01), loss)
        paths = []
        real = kc.minibatch_epoch

        def spy(*args, **kw):
            paths.append(kw["fused"])
            return real(*args, **kw)

        monkeypatch.setattr(kc, "minibatch_epoch", spy)
        h = m.fit(x, target, epochs=2, batch_size=4, verbose=0)
        monkeypatch.setattr(kc, "minibatch_epoch", real)
        assert paths == ([None, None] if fused else [False, False])  # one call per epoch
        fits.append((m.params.copy(), h.history["loss"]))
    np.testing.assert_allclose(fits[0][0], fits[1][0], **TOL[dtype])
    np.testing.assert_allclose(fits[0][1], fits[1][1], **TOL[dtype])
