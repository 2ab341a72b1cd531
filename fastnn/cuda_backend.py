"""The GPU side of Sequential: device selection, the device-resident fit, inference on the
device, and CUDA arrays from other libraries (torch, cupy) through __cuda_array_interface__.

Nothing here imports numba.cuda until a model actually asks for the GPU, so `import fastnn`
and every device="cpu" model stay free of the CUDA stack.

Device selection (Sequential(device=...), the MLP estimators' `device`):
  * "cpu"  the CPU kernels (the default);
  * "cuda" kernels.cuda on the GPU; raises DeviceUnavailableError, saying why and suggesting
           device="cpu", when there is no usable GPU (or numba-cuda is not installed). Under
           Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) "cuda" runs the same code in the
           simulator, which is how CI tests it;
  * "auto" "cuda" when a real GPU is usable, else "cpu" (the simulator never counts: it is
           orders of magnitude slower than the CPU kernels).

The fit on the GPU (`fit`, called by Sequential.fit once the call is validated):
  * x, the labels or targets and the sample weights are copied to the GPU once per fit (a
    CUDA array given as x is used where it lies, without a copy); so are the parameters, the
    gradient buffer and the optimizer state, as device copies of the flat buffers with
    per-layer views into them. They stay there for the whole fit;
  * each epoch uploads the shuffled visiting order (N int64, drawn by the model's generator on
    the host, so a cuda fit makes the same shuffles as the CPU fit with the same seed), then
    per batch: the rows are gathered on the device; a narrow network (every width <= 128,
    softmax cross-entropy or MSE; FUSED_MLP) then takes kernels.cuda.fused_mlp_train_step:
    one launch for the forward, the loss gradient and the delta recursion, then the per-layer
    weight_grad GEMMs; any other network runs the per-layer kernels: forward with kernels.cuda
    affine_act_forward, the loss with apply_loss_on_device writing the batch's loss into a
    device vector of per-batch losses, backward with affine_act_backward + weight_grad into
    the flat gradient buffer, the L2 terms, then one sgd_update / adam_update launch over all
    P parameters. The per-batch losses come back once per epoch (n_batches numbers);
  * batch_size=1 runs the same mini-batch loop (the CPU's fused per-sample kernel has no GPU
    twin);
  * the host `model.params` (and the optimizer state) are refreshed from the GPU at the end
    of the fit, on divergence, and at the end of each epoch only when something on the host
    will read them: user callbacks (EarlyStopping, ModelCheckpoint, the estimators' stopping
    rule), or tol's gradient check, which runs on the CPU;
  * metrics and validation run on the GPU from the device parameters; the logits come back
    only when a metric (accuracy, mse, mae) needs them.

Inference (predict, evaluate outside a fit) uploads the host parameters (P numbers) and runs
the per-layer kernels on the GPU; predict returns a NumPy array as on the CPU.
"""
import math
import os
import time

import numpy as np

DEVICES = ("cpu", "cuda", "auto")
INSTALL_HINT = "pip install 'fastnn-numba[cuda]'"
BLOCK = 256
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


def check_x(model, x, name, n_features):
    """Validate a GPU feature matrix: as models.check_x, on the device. For a cuda model the
    result stays on the GPU (cast or made contiguous there only when needed); a cpu model gets
    a host copy."""
    if model._device != "cuda":
        from .models import check_x as host_check
        return host_check(to_host(x), name, n_features, model.dtype)
    xd = as_device_array(x)
    if xd.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {xd.dtype}")
    if len(xd.shape) != 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, n_features), "
                         f"got shape {tuple(xd.shape)}")
    if xd.shape[0] == 0 or xd.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(xd.shape)})")
    if n_features is not None and xd.shape[1] != n_features:
        raise ValueError(f"{name} has {xd.shape[1]} features but the model expects {n_features}")
    k = _kernels(model.dtype)
    if xd.dtype != model.dtype or not _c_contiguous(xd):
        cuda = _import_cuda()
        out = cuda.device_array(tuple(xd.shape), model.dtype)
        k.cast2[_launch(out.size)](out, xd)
        xd = out
    bad = _import_cuda().to_device(np.zeros(1, np.int64))
    k.count_nonfinite[_launch(xd.size)](bad, xd)
    if int(bad.copy_to_host()[0]):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xd


# --------------------------------------------------------------------------- small kernels

def _launch(n):
    """(blocks, threads) for n elements: whole warps, at most BLOCK threads a block (small
    launches stay small, which also keeps the simulator, one Python thread per GPU thread,
    fast)."""
    threads = min(BLOCK, max(32, (n + 31) // 32 * 32))
    return max(1, (n + threads - 1) // threads), threads


def _kernels(dtype):
    """The helper kernels of the device fit for one dtype (gather_rows, gather,
    gather_labels, fill, axpy, sumsq_into, cast2, count_nonfinite): kernels.cuda builds them
    with every other kernel, per dtype (so the PTX check compiles them too, and a float32
    model's helpers stay float32)."""
    global cuda
    cuda = _import_cuda()
    from .kernels import cuda as kc
    return kc.namespace(dtype)


# --------------------------------------------------------------------------- device state

class _DeviceModel:
    """Device copies of a model's flat parameter buffer (and, for training, gradients and
    optimizer state), with per-layer views into them."""

    def __init__(self, model):
        from .kernels import cuda as kc
        from .layers import LEAKY_ALPHA
        self.cuda, self.kc, self.k = _import_cuda(), kc, _kernels(model.dtype)
        self.model, self.alpha = model, LEAKY_ALPHA
        self.dtype = model.dtype
        self.params = self.cuda.to_device(model.params)
        self.ws, self.bs = self._views(self.params)
        self.empty1 = self.cuda.device_array(0, self.dtype)
        self.empty2 = self.cuda.device_array((0, 0), self.dtype)
        self.empty_labels = self.cuda.device_array(0, np.int64)

    def _views(self, flat):
        m = self.model
        ws, bs = [], []
        for l in range(len(m.layers)):
            fi, fo = int(m.sizes[l]), int(m.sizes[l + 1])
            wo, bo = int(m.w_off[l]), int(m.b_off[l])
            ws.append(flat[wo:wo + fi * fo].reshape(fi, fo))
            bs.append(flat[bo:bo + fo] if bo >= 0 else flat[:0])
        return ws, bs

    def upload(self, a, dtype=None):
        """A host array on the device (device arrays pass through)."""
        if is_cuda_array(a):
            return as_device_array(a)
        return self.cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def device_targets(self, kernel, y):
        """(labels, targets) device arrays as kernels.cuda.apply_loss_on_device takes them."""
        if kernel.takes_labels:
            return self.upload(y, np.int64), self.empty2
        return self.empty_labels, self.upload(y, self.dtype)

    def forward(self, xd):
        """Logits (N, K) on the device for device rows xd (inference: allocates)."""
        a = xd
        for l, layer in enumerate(self.model.layers):
            out = self.cuda.device_array((a.shape[0], layer.units), self.dtype)
            pre = self.cuda.device_array((a.shape[0], layer.units), self.dtype)
            self.kc.affine_act_forward(out, pre, a, self.ws[l], self.bs[l], layer.act_code,
                                       self.alpha)
            a = out
        return a

    def penalty(self):
        """Σ_l λ_l Σ W_l², computed on the device; one scalar comes back."""
        regs = [(l, layer.kernel_regularizer.l2) for l, layer in enumerate(self.model.layers)
                if layer.kernel_regularizer]
        if not regs:
            return 0.0
        out = self.cuda.to_device(np.zeros(1, self.dtype))
        for l, lam in regs:  # one block per layer, in order: deterministic
            w = self.ws[l].reshape(self.ws[l].size)
            self.k.sumsq_into[1, self.kc.REDUCE](out, w, self.dtype.type(lam))
        return float(out.copy_to_host()[0])

    def evaluate(self, xd, labels, targets, swd, kernel, y_host):
        """evaluate's logs with the loss computed on the device."""
        z = self.forward(xd)
        dz = self.cuda.device_array(tuple(z.shape), self.dtype)
        loss = self.cuda.device_array(1, self.dtype)
        self.kc.apply_loss_on_device(loss, dz, z, labels, targets, swd, kernel.code,
                                     kernel.label_smoothing)
        logs = {"loss": float(loss.copy_to_host()[0]) + self.penalty()}
        if self.model.metrics:
            logs.update(self.model._metrics(None, y_host, z.copy_to_host()))
        return logs


def predict(model, x):
    """model's logits for x (host or GPU rows) computed on the GPU, as a NumPy array."""
    dm = _DeviceModel(model)
    return dm.forward(dm.upload(x, model.dtype)).copy_to_host()


def evaluate(model, x, y, sw, kernel):
    """Sequential._evaluate on the GPU."""
    dm = _DeviceModel(model)
    labels, targets = dm.device_targets(kernel, y)
    swd = dm.empty1 if sw is None else dm.upload(sw, model.dtype)
    return dm.evaluate(dm.upload(x, model.dtype), labels, targets, swd, kernel, y)


class _Trainer(_DeviceModel):
    """Everything one fit keeps on the GPU: data, parameters, gradients, optimizer state,
    the per-step workspace for one batch size."""

    def __init__(self, model, x, y, sw, kernel, batch_size):
        super().__init__(model)
        cuda, dtype = self.cuda, self.dtype
        self.kernel = kernel
        self.n = int(x.shape[0])
        self.batch_size = bs = int(batch_size)
        self.x = self.upload(x, dtype)
        self.labels, self.targets = self.device_targets(kernel, y)
        self.sw = self.empty1 if sw is None else self.upload(sw, dtype)
        self.y_host = y
        P = model.params.size
        self.grads = cuda.device_array(P, dtype)
        self.dws, self.dbs = self._views(self.grads)
        self.l2 = [l.kernel_regularizer.l2 if l.kernel_regularizer else 0.0
                   for l in model.layers]
        opt = model.optimizer
        self.opt_code, self.hyper, s1, s2, self.step = opt.kernel_args(opt.lr)
        self.host_state = (s1, s2)
        self.state = [cuda.to_device(s) if s.size else cuda.device_array(0, dtype)
                      for s in (s1, s2)]
        self.snapshot = [cuda.device_array(a.shape[0], dtype)
                         for a in (self.params, *self.state)]
        sizes = [int(s) for s in model.sizes]
        self.xb = cuda.device_array((bs, sizes[0]), dtype)
        self.lb = cuda.device_array(bs if self.labels.shape[0] else 0, np.int64)
        self.tb = cuda.device_array((bs if self.targets.shape[0] else 0,
                                     self.targets.shape[1] if self.targets.shape[0] else 0),
                                    dtype)
        self.swb = cuda.device_array(bs if self.sw.shape[0] else 0, dtype)
        widths = sizes[1:]
        self.pre = [cuda.device_array((bs, o), dtype) for o in widths]
        self.out = [cuda.device_array((bs, o), dtype) for o in widths]
        self.dout = [cuda.device_array((bs, o), dtype) for o in widths]
        self.dpre = [cuda.device_array((bs, o), dtype) for o in widths]
        self.n_batches = (self.n + bs - 1) // bs
        self.batch_losses = cuda.device_array(self.n_batches, dtype)
        self.has_bias = [int(b) >= 0 for b in model.b_off]
        self.fused = FUSED_MLP and self.kc.fused_mlp_supported(sizes, kernel.code)
        self.fused_ws = self.kc.FusedWorkspace(bs, sizes, dtype) if self.fused else None
        self.batch_rows = np.array([min(bs, self.n - s) for s in range(0, self.n, bs)],
                                   np.float64)

    # ---------------------------------------------------------------- one epoch

    def epoch(self, order, lr):
        """One epoch over the rows in `order` (host int64); returns the mean loss without the
        L2 penalty (the per-batch losses are the only figures copied back)."""
        from .kernels import codes
        kc, k, cuda = self.kc, self.k, self.cuda
        order_d = cuda.to_device(np.ascontiguousarray(order, np.int64))
        acts = [l.act_code for l in self.model.layers]
        n_layers = len(acts)
        h = self.hyper
        momentum, nesterov, wd = float(h[1]), bool(h[2]), float(h[3])
        beta1, beta2, eps, decoupled = float(h[4]), float(h[5]), float(h[6]), bool(h[7])
        for b, start in enumerate(range(0, self.n, self.batch_size)):
            m = min(self.batch_size, self.n - start)
            xb = self.xb[:m]
            k.gather_rows[_launch(m * xb.shape[1])](xb, self.x, order_d, start, m)
            if self.lb.shape[0]:
                k.gather_labels[_launch(m)](self.lb, self.labels, order_d, start, m)
            if self.tb.shape[0]:
                k.gather_rows[_launch(m * self.tb.shape[1])](
                    self.tb, self.targets, order_d, start, m)
            if self.swb.shape[0]:
                k.gather[_launch(m)](self.swb, self.sw, order_d, start, m)
            if self.fused:
                kc.fused_mlp_train_step(
                    self.batch_losses[b:b + 1], self.grads, xb, self.lb[:m], self.tb[:m],
                    self.swb[:m], self.params, self.model.sizes, acts, self.has_bias,
                    self.alpha, self.kernel.code, self.kernel.label_smoothing,
                    workspace=self.fused_ws)
            else:
                self._layerwise_step(b, m, xb, acts)
            for l in range(n_layers):
                if self.l2[l]:
                    dw, w = self.dws[l], self.ws[l]
                    k.axpy[_launch(w.size)](dw.reshape(dw.size), w.reshape(w.size),
                                            self.dtype.type(2.0 * self.l2[l]))
            self.step += 1
            if self.opt_code == codes.OPT_SGD:
                kc.sgd_update(self.params, self.grads, self.state[0], lr, momentum, nesterov,
                              wd)
            else:
                kc.adam_update(self.params, self.grads, self.state[0], self.state[1], lr, beta1,
                               beta2, eps, wd, decoupled, self.step)
        losses = self.batch_losses.copy_to_host().astype(np.float64)
        return float(np.dot(losses, self.batch_rows) / max(self.n, 1))

    def _layerwise_step(self, b, m, xb, acts):
        """The per-layer kernels: forward, loss, backward and weight gradients of one batch."""
        kc, k = self.kc, self.k
        a = xb
        for l in range(len(acts)):
            kc.affine_act_forward(self.out[l][:m], self.pre[l][:m], a, self.ws[l],
                                  self.bs[l], acts[l], self.alpha)
            a = self.out[l][:m]
        kc.apply_loss_on_device(self.batch_losses[b:b + 1], self.dout[-1][:m], a,
                                self.lb[:m], self.tb[:m], self.swb[:m], self.kernel.code,
                                self.kernel.label_smoothing)
        k.fill[_launch(self.grads.shape[0])](self.grads, self.dtype.type(0))  # accumulated into
        for l in range(len(acts) - 1, -1, -1):
            dx = self.dout[l - 1][:m] if l > 0 else self.empty2
            kc.affine_act_backward(dx, self.dpre[l][:m], self.dout[l][:m], self.pre[l][:m],
                                   self.out[l][:m], self.ws[l], acts[l], self.alpha)
            kc.weight_grad(self.dws[l], self.dbs[l], xb if l == 0 else self.out[l - 1][:m],
                           self.dpre[l][:m])

    # ---------------------------------------------------------------- host sync

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
        self.params.copy_to_host(self.model.params)
        for dev, host in zip(self.state, self.host_state):
            if host.size:
                dev.copy_to_host(host)
        self.model.optimizer.set_step(self.step)


def fit(model, x, y, sw, kernel, val, epochs, batch_size, shuffle, callbacks, verbose, tol):
    """Sequential.fit's epoch loop on the GPU (the call is validated and the model built)."""
    from . import callbacks as callbacks_mod
    from .models import DivergenceError
    trainer = _Trainer(model, x, y, sw, kernel, batch_size)
    vdata = None
    if val is not None:
        xv, yv, swv, vkernel = val
        vl, vt = trainer.device_targets(vkernel, yv)
        vdata = (trainer.upload(xv, model.dtype), vl, vt,
                 trainer.empty1 if swv is None else trainer.upload(swv, model.dtype), vkernel, yv)
    # user callbacks may read model.params (EarlyStopping, checkpoints); keep it fresh for them
    host_readers = bool(callbacks) or tol is not None
    x_host = None
    history = callbacks_mod.History()
    history.converged = None
    prev_loss = None
    callbacks = [history] + list(callbacks)
    for cb in callbacks:
        cb.set_model(model)
    model.stop_training = False
    for cb in callbacks:
        cb.on_train_begin()
    try:
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            trainer.save_point()
            lr = model.optimizer.lr_at(epoch)
            t0 = time.perf_counter()
            order = model.rng.permutation(trainer.n) if shuffle else np.arange(trainer.n)
            loss = trainer.epoch(order, lr)
            loss = loss + trainer.penalty() if math.isfinite(loss) else loss
            if not math.isfinite(loss):
                trainer.restore_point()
                trainer.sync_to_host()
                raise DivergenceError(
                    f"the training loss became {loss} in epoch {epoch + 1}; the weights from "
                    "the start of that epoch were restored. Lower the learning rate, scale the "
                    "inputs, or clip the targets.")
            logs = {"loss": loss}
            if model.metrics:
                z = trainer.forward(trainer.x).copy_to_host()
                logs.update(model._metrics(None, y, z))
            if vdata is not None:
                vlogs = trainer.evaluate(*vdata)
                logs.update({"val_" + key: v for key, v in vlogs.items()})
            if verbose:
                parts = " - ".join(f"{key}: {v:.4f}" for key, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.2f}s - {parts}")
            if host_readers:
                trainer.sync_to_host()
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if tol is not None:
                if prev_loss is not None and abs(loss - prev_loss) < tol:
                    history.converged = "loss"
                else:
                    if x_host is None:
                        x_host = to_host(x) if is_cuda_array(x) else x
                        x_host = np.ascontiguousarray(x_host, model.dtype)
                    if model._gradient_norm(x_host, y, sw, kernel) < tol:
                        history.converged = "gradient"
                prev_loss = loss
            if model.stop_training or history.converged:
                break
    except DivergenceError:
        raise
    except BaseException:
        trainer.sync_to_host()  # an interrupted fit leaves the weights it reached
        raise
    trainer.sync_to_host()
    for cb in callbacks:
        cb.on_train_end()
    return history
