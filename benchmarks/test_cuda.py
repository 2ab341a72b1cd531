"""GPU benchmarks (issue 5): per-step training time of fastnn on the GPU (device="cuda") vs
fastnn on the CPU vs PyTorch CUDA eager, for a [w, w, w, w, 10] ReLU MLP with softmax
cross-entropy and plain SGD, widths 16..1024, batches 1, 128, 2^14 and 2^16.

Every group checks correctness before it times anything: one epoch of a few steps from the
same starting weights must give the same weights on every implementation (fastnn cuda vs
fastnn cpu, torch cuda vs fastnn cpu), to float32 tolerance.

A step is timed as (one fit epoch over n = batch * steps rows, shuffle off) / steps, after a
warm-up epoch (compilation, allocation); the GPU epoch ends with the weights copied back to the
host, so its time includes the synchronisation. On a machine without a usable GPU (or under
Numba's CUDA simulator) every benchmark here is skipped, saying why.

    pytest benchmarks/test_cuda.py --benchmark-only --benchmark-json=CUDA.json
    FASTNN_BENCH_FULL=1 adds widths 256 and 1024 at batch 2^16 (minutes on the CPU side)
"""
import os

import numpy as np
import pytest

from fastnn import Dense, Sequential, cuda_backend, optim
from fastnn.bench.peers import init_params, make_data

FULL = bool(os.environ.get("FASTNN_BENCH_FULL"))
WIDTHS = (16, 64, 256, 1024)
BATCHES = (1, 128, 2 ** 14, 2 ** 16)
N_CLASSES = 10
LR = 0.01
ROWS_BUDGET = 2 ** 27  # floats of x per epoch: 512 MB in float32
RTOL, ATOL = 1e-4, 1e-5  # float32, a few steps, different summation orders


def _gpu_or_skip():
    kind, reason = cuda_backend._probe()
    if kind != "gpu":
        why = ("Numba's CUDA simulator is enabled: timings would be meaningless"
               if kind == "simulator" else reason)
        pytest.skip(f"no usable GPU: {why}")


def _torch_cuda_or_skip():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} has no usable CUDA device")
    return torch


def _sizes(width):
    return np.array([width, width, width, width, N_CLASSES], np.int64)


def _steps(width, batch):
    """Steps per timed epoch: enough to amortise the per-fit setup, few enough for memory."""
    return int(max(2, min(200, ROWS_BUDGET // (batch * width))))


def _too_big(width, batch, device):
    if FULL:
        return False
    # the CPU side of the widest, largest cases takes minutes a round
    return device == "cpu" and batch == 2 ** 16 and width >= 256


def _fastnn(sizes, params, device):
    layers = [Dense(int(u), activation="relu") for u in sizes[1:-1]] + [Dense(int(sizes[-1]))]
    model = Sequential(layers, seed=0, dtype="float32", device=device)
    model.compile(optimizer=optim.SGD(lr=LR), loss="softmax_cross_entropy")
    model.build(int(sizes[0]))
    model.params[...] = params
    return model


class _TorchCuda:
    """The same MLP in PyTorch eager on the GPU, loaded from fastnn's flat buffer."""

    def __init__(self, torch, sizes, params):
        self.torch = torch
        mods = []
        for l in range(len(sizes) - 1):
            mods.append(torch.nn.Linear(int(sizes[l]), int(sizes[l + 1])))
            if l < len(sizes) - 2:
                mods.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*mods).cuda()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.load(sizes, params)

    def load(self, sizes, params):
        off = 0
        with self.torch.no_grad():
            for lin in (m for m in self.net if isinstance(m, self.torch.nn.Linear)):
                fi, fo = lin.in_features, lin.out_features
                w = params[off:off + fi * fo].reshape(fi, fo)
                off += fi * fo
                b = params[off:off + fo]
                off += fo
                lin.weight.copy_(self.torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(self.torch.from_numpy(b))

    def flat(self):
        out = []
        for lin in (m for m in self.net if isinstance(m, self.torch.nn.Linear)):
            out += [lin.weight.detach().cpu().numpy().T.ravel(),
                    lin.bias.detach().cpu().numpy()]
        return np.concatenate(out)

    def epoch(self, x, y, batch):
        F = self.torch.nn.functional
        for s in range(0, x.shape[0], batch):
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(x[s:s + batch]), y[s:s + batch])
            loss.backward()
            self.opt.step()
        self.torch.cuda.synchronize()


def _check(sizes, params, x, y, batch, torch=None):
    """Same weights after a few steps on every implementation, or AssertionError."""
    n = min(x.shape[0], 3 * batch)
    want = _fastnn(sizes, params, "cpu")
    want.fit(x[:n], y[:n], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    got = _fastnn(sizes, params, "cuda")
    got.fit(x[:n], y[:n], epochs=1, batch_size=batch, shuffle=False, verbose=0)
    np.testing.assert_allclose(got.params, want.params, rtol=RTOL, atol=ATOL,
                               err_msg="fastnn cuda disagrees with fastnn cpu")
    if torch is not None:
        t = _TorchCuda(torch, sizes, params)
        t.epoch(torch.from_numpy(x[:n]).cuda(), torch.from_numpy(y[:n]).cuda(), batch)
        np.testing.assert_allclose(t.flat(), want.params, rtol=RTOL, atol=ATOL,
                                   err_msg="torch cuda disagrees with fastnn cpu")


_DATA = {}


def _data(width, batch):
    key = (width, batch)
    if key not in _DATA:
        sizes = _sizes(width)
        steps = _steps(width, batch)
        x, y = make_data(batch * steps, width, N_CLASSES, 0)
        params = init_params(sizes, np.float32, 1)
        _DATA.clear()  # one case's data at a time: the large ones are hundreds of MB
        _DATA[key] = (sizes, params, x.astype(np.float32), y.astype(np.int64), steps)
    return _DATA[key]


IMPLS = ["fastnn cuda", "fastnn cpu", "torch cuda eager"]


@pytest.mark.parametrize("name", IMPLS)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("batch", BATCHES)
def test_cuda_step(benchmark, name, width, batch):
    _gpu_or_skip()
    torch = _torch_cuda_or_skip() if name == "torch cuda eager" else None
    if _too_big(width, batch, "cpu" if name == "fastnn cpu" else "gpu"):
        pytest.skip("CPU at batch 2^16, width >= 256: set FASTNN_BENCH_FULL=1")
    sizes, params, x, y, steps = _data(width, batch)
    _check(sizes, params, x, y, batch, torch)
    benchmark.group = f"CUDA per-step [w,w,w,w,10] w={width} batch {batch}"
    benchmark.extra_info.update({"steps": steps, "width": width, "batch": batch,
                                 "note": "time is one epoch; divide by steps for a step"})
    if name == "torch cuda eager":
        impl = _TorchCuda(torch, sizes, params)
        xd, yd = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
        impl.epoch(xd, yd, batch)  # warm-up (cuBLAS handles, allocator)
        benchmark.pedantic(lambda: impl.epoch(xd, yd, batch),
                           setup=lambda: impl.load(sizes, params), rounds=3, iterations=1)
    else:
        device = "cuda" if name == "fastnn cuda" else "cpu"
        model = _fastnn(sizes, params, device)

        def run():
            model.fit(x, y, epochs=1, batch_size=batch, shuffle=False, verbose=0)

        def reset():
            model.params[...] = params
            model.optimizer.build(model.params.size, model.dtype)

        run()  # warm-up: compilation, and the first launch of every kernel
        benchmark.pedantic(run, setup=reset, rounds=3, iterations=1)


def test_cuda_fused_mlp_forward_vs_per_layer(benchmark):
    """Inference through kernels.cuda.fused_mlp_forward vs the per-layer kernels
    (predict on a cuda model), widths up to 128, batch 2^14."""
    _gpu_or_skip()
    from numba import cuda

    from fastnn.kernels import cuda as kc
    width, batch = 64, 2 ** 14
    sizes, params, x, y, _ = _data(width, batch)
    model = _fastnn(sizes, params, "cuda")
    xd = cuda.to_device(x[:batch])
    out = cuda.device_array((batch, N_CLASSES), np.float32)
    pd = cuda.to_device(params)
    acts = np.array([layer.act_code for layer in model.layers], np.int64)
    args = (out, xd, pd, sizes, model.w_off, model.b_off, acts, 0.01)
    kc.fused_mlp_forward(*args)
    np.testing.assert_allclose(out.copy_to_host(), model.predict(x[:batch]), rtol=1e-4,
                               atol=1e-5)
    benchmark.group = f"CUDA inference [w,w,w,w,10] w={width} batch {batch}"

    def fused():
        kc.fused_mlp_forward(*args)
        cuda.synchronize()

    benchmark.pedantic(fused, rounds=10, iterations=1)
