"""The GPU backend: Sequential's operations on the kernels.cuda kernels, with data, parameters
and optimizer state kept on the device; device selection; CUDA arrays from other libraries
(torch, cupy) through __cuda_array_interface__.

It offers the names fastnn.cpu_backend offers (forward, evaluate, gradient, Trainer; see that
module's docstring), so Sequential's one fit loop runs unchanged on either. Nothing here
imports numba.cuda until a model actually asks for the GPU, so `import fastnn` and every
device="cpu" model stay free of the CUDA stack.

Device selection (Sequential(device=...), the MLP estimators' `device`):
  * "cpu"  the CPU kernels (the default);
  * "cuda" kernels.cuda on the GPU; raises DeviceUnavailableError, saying why and suggesting
           device="cpu", when there is no usable GPU (or numba-cuda is not installed). Under
           Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) "cuda" runs the same code in the
           simulator, which is how CI tests it;
  * "auto" "cuda" when a real GPU is usable, else "cpu" (the simulator never counts: it is
           orders of magnitude slower than the CPU kernels).

A fit on the GPU (Trainer):
  * x, the labels or targets and the sample weights are copied to the GPU once per fit (a
    CUDA array given as x is used where it lies, without a copy); so are the parameters and
    the optimizer state. They stay there for the whole fit;
  * each epoch uploads the visiting order (N int64, drawn by the model's generator on the
    host, so a cuda fit makes the same shuffles as the CPU fit with the same seed) and runs
    kernels.cuda.minibatch_epoch, or kernels.cuda.sgd_epoch for per-sample SGD: the same
    kernels, names and arguments as the CPU's, driving device kernels, with one
    kernels.cuda.EpochWorkspace for the whole fit (its buffers are allocated in the first
    epoch); one loss per epoch comes back;
  * the host `model.params` (and the optimizer state) are refreshed from the GPU at the end
    of the fit, on divergence, and at the end of each epoch only when a user callback will
    read them (the fit loop calls sync_to_host);
  * metrics, validation, the divergence check and tol's gradient run on the GPU from the
    device parameters; logits come back only when a metric needs them.

Inference outside a fit (forward, evaluate, gradient) uploads the host parameters (P numbers).
"""
import os

import numpy as np

from .validation import check_x as check_host_x
from .validation import check_x_shape

DEVICES = ("cpu", "cuda", "auto")
INSTALL_HINT = "pip install 'fastnn-numba[cuda]'"
# narrow networks (every width <= kernels.cuda.MAX_WIDTH, softmax cross-entropy or MSE) train
# with kernels.cuda.fused_mlp_train_step: one launch for the forward, the loss gradient and the
# delta recursion; False forces the per-layer kernels (tests compare the two)
FUSED_MLP = True
cuda = None  # numba.cuda once a model asks for the GPU (_kernels)


class DeviceUnavailableError(RuntimeError):
    """device="cuda" was asked for on a machine where fastnn cannot use a GPU."""


# --------------------------------------------------------------------------- device selection

def _load_numba_cuda():
    from numba import cuda
    from .kernels import cuda as _kc  # noqa: F401  (the twins of kernels.cpu)
    return cuda


def _import_cuda():
    """numba.cuda, or raise DeviceUnavailableError when numba-cuda is missing or broken."""
    try:
        cuda = _load_numba_cuda()
    except Exception as e:  # ImportError, or a CUDA stack that fails to load
        raise DeviceUnavailableError(
            f"device='cuda' needs numba-cuda, which could not be imported ({e!r}); install it "
            f"with {INSTALL_HINT}, or use device='cpu'") from e
    return cuda


def simulator_enabled():
    """Whether numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        from numba.cuda.core import config
        return bool(config.ENABLE_CUDASIM)
    except Exception:
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _probe():
    """(kind, reason): kind "gpu" for a usable real GPU, "simulator" for Numba's simulator,
    None for neither, with reason saying why. Tests monkeypatch this."""
    try:
        cuda = _import_cuda()
    except DeviceUnavailableError as e:
        return None, str(e)
    if simulator_enabled():
        return "simulator", "Numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return "gpu", "a CUDA GPU is available"
    except Exception as e:  # a driver that fails to initialise
        return None, f"numba.cuda could not initialise the CUDA driver ({e!r})"
    return None, ("numba.cuda.is_available() is False: no NVIDIA GPU or CUDA driver was found "
                  "on this machine")


def resolve_device(device):
    """The backend ("cpu" or "cuda") that `device` means here; validates it."""
    if not isinstance(device, str):
        raise TypeError(f"device must be one of {', '.join(map(repr, DEVICES))}, "
                        f"got {device!r}")
    key = device.lower()
    if key not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(map(repr, DEVICES))}")
    if key == "cpu":
        return "cpu"
    kind, reason = _probe()
    if key == "auto":
        return "cuda" if kind == "gpu" else "cpu"
    if kind is None:
        if "numba-cuda" in reason:
            raise DeviceUnavailableError(reason)
        raise DeviceUnavailableError(
            f"device='cuda' was requested but no usable GPU was found: {reason}. Use "
            f"device='cpu' (or device='auto', which falls back to the CPU); for the GPU, "
            f"install an NVIDIA driver and {INSTALL_HINT}")
    return "cuda"


# --------------------------------------------------------------------------- CUDA arrays

def is_cuda_array(a):
    """Whether `a` is a GPU array: anything exposing __cuda_array_interface__ (torch and cupy
    CUDA tensors, numba device arrays), or a simulator device array (which does not)."""
    if isinstance(a, np.ndarray):
        return False
    # ask the object, not its type: torch.Tensor's class has the property for CPU tensors too
    # (it raises AttributeError on them), so a CPU tensor must not count as a GPU array
    return (hasattr(a, "__cuda_array_interface__")
            or type(a).__module__.startswith("numba.cuda"))


def _np_from_interface(iface):
    """In the simulator, "device" memory is host memory: a NumPy view of the interface's
    pointer, so the simulated path is zero-copy too."""
    import ctypes
    shape = tuple(iface["shape"])
    dtype = np.dtype(iface["typestr"])
    strides = iface.get("strides")
    if strides is None:
        strides = tuple(int(s) for s in np.empty(shape, dtype, order="C").strides) \
            if shape else ()
    ptr = iface["data"][0]
    n_bytes = 0 if 0 in shape else \
        sum((d - 1) * s for d, s in zip(shape, strides)) + dtype.itemsize
    buf = (ctypes.c_char * max(n_bytes, 1)).from_address(ptr) if ptr else bytearray(1)
    return np.ndarray(shape, dtype, buffer=buf, strides=strides)


def as_device_array(a):
    """A numba device array viewing `a`'s GPU memory, without a copy (numba.cuda.as_cuda_array
    on a real GPU; in the simulator, a simulator array over the same memory)."""
    cuda = _import_cuda()
    if type(a).__module__.startswith("numba.cuda"):
        return a
    if simulator_enabled():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(_np_from_interface(a.__cuda_array_interface__))
    return cuda.as_cuda_array(a)


def to_host(a):
    """`a` as a NumPy array: GPU arrays are copied back, anything else passes through."""
    if not is_cuda_array(a):
        return a
    return np.asarray(as_device_array(a).copy_to_host())


def _c_contiguous(a):
    expected = a.dtype.itemsize
    for dim, stride in zip(reversed(a.shape), reversed(a.strides)):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


def check_x(x, name, n_features, dtype, on_device):
    """Validate a GPU feature matrix (validation.check_x's checks and messages). With
    on_device (a cuda model) the result stays on the GPU, cast or made contiguous there only
    when needed; otherwise the model gets a validated host copy."""
    if not on_device:
        return check_host_x(to_host(x), name, n_features, dtype)
    xd = as_device_array(x)
    check_x_shape(xd.shape, xd.dtype, name, n_features)
    cuda = _import_cuda()
    k = _kernels(dtype)
    if xd.dtype != dtype or not _c_contiguous(xd):
        out = cuda.device_array(tuple(xd.shape), dtype)
        k.cast2[_launch(out.size)](out, xd)
        xd = out
    bad = cuda.to_device(np.zeros(1, np.int64))
    k.count_nonfinite[_launch(xd.size)](bad, xd)
    if int(bad.copy_to_host()[0]):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xd


# --------------------------------------------------------------------------- device state

def _launch(n):
    """(blocks, threads) for n elements: whole warps, at most 256 threads a block (small
    launches stay small, which also keeps the simulator, one Python thread per GPU thread,
    fast)."""
    threads = min(256, max(32, (n + 31) // 32 * 32))
    return max(1, (n + threads - 1) // threads), threads


def _kernels(dtype):
    """kernels.cuda's helper kernels for one dtype (cast2, count_nonfinite, fill, axpy,
    sumsq_into, ...): built with every other kernel, per dtype, so the PTX check covers them
    and a float32 model's helpers stay float32."""
    _import_cuda()
    from .kernels import cuda as kc
    return kc.namespace(dtype)


class _Device:
    """A model's flat parameter buffer on the device, with per-layer views into it, and the
    per-layer kernels that run inference and the full-batch gradient there."""

    def __init__(self, stack, params):
        from .kernels import cuda as kc
        self.cuda, self.kc, self.k = _import_cuda(), kc, _kernels(stack.dtype)
        self.stack, self.dtype = stack, stack.dtype
        self.params = self.upload(params, stack.dtype)
        self.ws, self.bs = stack.views(self.params)
        self.empty1 = self.cuda.device_array(0, self.dtype)
        self.empty2 = self.cuda.device_array((0, 0), self.dtype)
        self.empty_labels = self.cuda.device_array(0, np.int64)
        self._buffers = {}

    def upload(self, a, dtype=None):
        """A host array on the device (device arrays pass through)."""
        if is_cuda_array(a):
            return as_device_array(a)
        return _import_cuda().to_device(np.ascontiguousarray(a, dtype=dtype))

    def prepare(self, x, y, sw, kernel):
        """(x, labels, targets, sample_weight, kernel, y) on the device, as the kernels take
        them (the unused one of labels / targets empty); y stays on the host for metrics."""
        if kernel.takes_labels:
            labels, targets = self.upload(y, np.int64), self.empty2
        else:
            labels, targets = self.empty_labels, self.upload(y, self.dtype)
        swd = self.empty1 if sw is None else self.upload(sw, self.dtype)
        return self.upload(x, self.dtype), labels, targets, swd, kernel, y

    def _layer_buffers(self, n):
        if n not in self._buffers:
            cuda = self.cuda
            widths = [int(o) for o in self.stack.sizes[1:]]
            self._buffers[n] = tuple([cuda.device_array((n, o), self.dtype) for o in widths]
                                     for _ in range(4))  # pre, out, dout, dpre
        return self._buffers[n]

    def forward(self, xd):
        """Logits (N, K) on the device for device rows xd."""
        pre, out, _, _ = self._layer_buffers(xd.shape[0])
        a = xd
        for l in range(self.stack.n_layers):
            self.kc.affine_act_forward(out[l], pre[l], a, self.ws[l], self.bs[l],
                                       int(self.stack.acts[l]), self.stack.alpha)
            a = out[l]
        return a

    def penalty(self):
        """Σ_l λ_l Σ W_l², computed on the device; one scalar comes back."""
        if not np.any(self.stack.l2):
            return 0.0
        out = self.cuda.to_device(np.zeros(1, self.dtype))
        for w, lam in zip(self.ws, self.stack.l2):  # one block per layer, in order
            if lam:
                self.k.sumsq_into[1, self.kc.REDUCE](out, w.reshape(w.size),
                                                    self.dtype.type(lam))
        return float(out.copy_to_host()[0])

    def evaluate(self, data, with_logits=True):
        """(mean loss + L2 penalty, host logits, or None without with_logits) on prepared
        data."""
        xd, labels, targets, swd, kernel, _ = data
        z = self.forward(xd)
        dz = self.cuda.device_array(tuple(z.shape), self.dtype)
        loss = self.cuda.device_array(1, self.dtype)
        self.kc.apply_loss_on_device(loss, dz, z, labels, targets, swd, kernel.code,
                                     kernel.label_smoothing)
        value = float(loss.copy_to_host()[0]) + self.penalty()
        return value, z.copy_to_host() if with_logits else None

    def gradient(self, grads, data):
        """grads (device, P) = d(mean loss + L2)/d(params) on prepared data, through the
        per-layer kernels; returns the mean loss without the penalty."""
        xd, labels, targets, swd, kernel, _ = data
        s, kc = self.stack, self.kc
        pre, out, dout, dpre = self._layer_buffers(xd.shape[0])
        z = self.forward(xd)
        loss = self.cuda.device_array(1, self.dtype)
        kc.apply_loss_on_device(loss, dout[-1], z, labels, targets, swd, kernel.code,
                                kernel.label_smoothing)
        self.k.fill[_launch(grads.shape[0])](grads, self.dtype.type(0))  # accumulated into
        dws, dbs = s.views(grads)
        for l in range(s.n_layers - 1, -1, -1):
            dx = dout[l - 1] if l > 0 else self.empty2
            kc.affine_act_backward(dx, dpre[l], dout[l], pre[l], out[l], self.ws[l],
                                   int(s.acts[l]), s.alpha)
            kc.weight_grad(dws[l], dbs[l], xd if l == 0 else out[l - 1], dpre[l])
            if s.l2[l]:
                dw, w = dws[l], self.ws[l]
                self.k.axpy[_launch(w.size)](dw.reshape(dw.size), w.reshape(w.size),
                                             self.dtype.type(2.0 * s.l2[l]))
        return float(loss.copy_to_host()[0])


def forward(stack, params, x):
    """The logits for x (host or GPU rows) computed on the GPU, as a NumPy array."""
    dev = _Device(stack, params)
    return dev.forward(dev.upload(x, stack.dtype)).copy_to_host()


def evaluate(stack, params, x, y, sw, kernel):
    """(mean loss + L2 penalty, logits) on (x, y), computed on the GPU."""
    dev = _Device(stack, params)
    return dev.evaluate(dev.prepare(x, y, sw, kernel))


def gradient(stack, params, x, y, sw, kernel):
    """(mean loss + L2 penalty, dL/dparams as a NumPy array), computed on the GPU."""
    dev = _Device(stack, params)
    grads = dev.cuda.device_array(params.shape[0], stack.dtype)
    loss = dev.gradient(grads, dev.prepare(x, y, sw, kernel))
    return loss + dev.penalty(), grads.copy_to_host()


class _HostReduction:
    """A data-parallel fit's reduction of a device buffer of P values, through the host: the
    buffer is copied into a page-locked host message of P + 1 values, reduced by
    kernels.mpi.reduce_weighted (one in-place MPI_Allreduce: each rank's values times its
    `count` rows, plus the rows; then divided by their sum) and copied back. Called with the
    gradient per mini-batch step (kernels.cuda.minibatch_epoch's `reduce`) and with the
    parameters per local-SGD round. A rank with count 0 sends zeros and its buffer is not
    read. One GPU per rank; the MPI library never sees device memory, so any MPI works (a
    CUDA-aware MPI could reduce the device buffer in place and save the two copies)."""

    def __init__(self, parallel, size, dtype, cuda):
        self.mpi = parallel.mpi
        self.message = cuda.pinned_array(size + 1, dtype)
        self.values = self.message[:-1]

    def __call__(self, buf, count):
        if count:
            buf.copy_to_host(self.values)
        self.mpi.reduce_weighted(self.message, self.values, count)
        buf.copy_to_device(self.values)


class Trainer(_Device):
    """One fit on the GPU: data, parameters and optimizer state on the device for the whole
    fit; each epoch is one call of kernels.cuda.minibatch_epoch or sgd_epoch (see the module
    docstring).

    A data-parallel fit (`parallel`, see fastnn.cpu_backend; one GPU per rank) goes through
    the host: mini-batch epochs pass minibatch_epoch a `reduce` hook (_HostReduction) that
    averages the gradient over the ranks' rows before every optimizer step, so R ranks with
    batch B take the steps of one process with batch R B, as on the CPU; per-sample SGD is
    local SGD, sgd_epoch over each `sync_every` rows and then the parameters averaged,
    weighted by the rows each rank trained on (kernels.mpi.local_sgd_epoch's rounds)."""

    def __init__(self, stack, params, optimizer, x, y, sw, kernel, batch_size, per_sample,
                 parallel=None):
        super().__init__(stack, params)
        cuda = self.cuda
        self.host_params, self.optimizer = params, optimizer
        self.batch_size, self.per_sample = int(batch_size), per_sample
        self.data = self.prepare(x, y, sw, kernel)
        self.n = int(x.shape[0])
        self.grads = cuda.device_array(params.shape[0], self.dtype)
        _, _, s1, s2, self.step = optimizer.kernel_args(optimizer.lr)
        self.host_state = (s1, s2)
        self.state = [cuda.to_device(s) if s.size else cuda.device_array(0, self.dtype)
                      for s in (s1, s2)]
        self.snapshot = [cuda.device_array(a.shape[0], self.dtype)
                         for a in (self.params, *self.state)]
        self.saved_step = self.step
        # kernels.cuda's epoch buffers (and the visiting order's), allocated by the first epoch
        self.workspace = self.kc.EpochWorkspace()
        self.parallel = parallel
        self.reduce = None if parallel is None else \
            _HostReduction(parallel, params.shape[0], self.dtype, cuda)

    def epoch(self, order, lr, seed=0):
        s, kc = self.stack, self.kc
        xd, labels, targets, swd, kernel, _ = self.data
        if self.parallel is not None and self.per_sample:
            return self._local_sgd_epoch(order, lr, seed)
        if self.per_sample:
            return kc.sgd_epoch(self.params, xd, labels, targets, order, s.sizes, s.w_off,
                                s.b_off, s.acts, s.alpha, s.drop, seed,
                                kernel.code, lr, self.optimizer.weight_decay,
                                workspace=self.workspace)
        opt_code, hyper, _, _, _ = self.optimizer.kernel_args(lr)
        loss, self.step = kc.minibatch_epoch(
            self.params, self.grads, self.state[0], self.state[1], xd, labels, targets, swd,
            order, self.batch_size, s.sizes, s.w_off, s.b_off, s.acts, s.alpha, s.l2, s.drop, seed,
            kernel.code, kernel.label_smoothing, opt_code, hyper, self.step,
            workspace=self.workspace, fused=None if FUSED_MLP else False, reduce=self.reduce,
            n_steps=None if self.parallel is None else self.parallel.steps)
        if self.parallel is None:
            return loss
        return self.parallel.mean_loss(loss * self.n)  # loss: the mean over this rank's rows

    def _local_sgd_epoch(self, order, lr, seed):
        """kernels.mpi.local_sgd_epoch on the GPU: per round, sgd_epoch over this rank's next
        `sync_every` rows (none once they ran out), then the parameters averaged over the
        ranks through the host."""
        s, par = self.stack, self.parallel
        xd, labels, targets, _, kernel, _ = self.data
        total = 0.0
        for start in range(0, par.steps * par.unit, par.unit):
            rows = order[start:start + par.unit]
            if rows.shape[0]:
                total += rows.shape[0] * self.kc.sgd_epoch(
                    self.params, xd, labels, targets, rows, s.sizes, s.w_off, s.b_off, s.acts,
                    s.alpha, s.drop, seed, kernel.code, lr, self.optimizer.weight_decay,
                    workspace=self.workspace)
            self.reduce(self.params, rows.shape[0])
        return par.mean_loss(total)

    def train_logits(self):
        return self.forward(self.data[0]).copy_to_host()

    def gradient_norm(self):
        """||dL/dparams|| of the full-batch loss; in a data-parallel fit, of the loss over
        every rank's rows (the ranks' gradients, L2 terms included, averaged by rows: the L2
        terms, the same on every rank, come out once)."""
        if self.n:
            self.gradient(self.grads, self.data)
        if self.reduce is not None:
            self.reduce(self.grads, self.n)
        g = self.grads.copy_to_host().astype(np.float64)
        return float(np.sqrt(np.dot(g, g)))

    def finite(self):
        return all(self.kc.all_finite(a) for a in (self.params, *self.state) if a.shape[0])

    def save_point(self):
        for dst, src in zip(self.snapshot, (self.params, *self.state)):
            if src.shape[0]:
                dst.copy_to_device(src)
        self.saved_step = self.step

    def restore_point(self):
        for src, dst in zip(self.snapshot, (self.params, *self.state)):
            if dst.shape[0]:
                dst.copy_to_device(src)
        self.step = self.saved_step

    def sync_to_host(self):
        """model.params and the optimizer state from the GPU, in place."""
        self.params.copy_to_host(self.host_params)
        for dev, host in zip(self.state, self.host_state):
            if host.size:
                dev.copy_to_host(host)
        self.optimizer.set_step(self.step)
