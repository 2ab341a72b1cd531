"""Sequential: a stack of Dense layers over one flat parameter buffer, trained by the kernels.

fit picks one of two paths:
  * batch_size=1 with plain SGD and a loss sgd_epoch knows runs each epoch as one call to the
    fused per-sample kernel (kernels.cpu.sgd_epoch);
  * anything else is a mini-batch loop: forward with affine_act_forward, the loss kernel,
    backward with affine_act_backward + weight_grad into the flat gradient buffer, then one
    optimizer call. Every buffer is allocated once per (model, batch size), never per step.
"""
import math
import numbers

import numpy as np

from . import callbacks as callbacks_mod
from . import losses as losses_mod
from . import optim
from .kernels import codes, cpu
from .kernels.layout import mlp_layout
from .layers import LEAKY_ALPHA, Dense

METRICS = ("accuracy", "mse", "mae")


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite; the model holds its last finite weights."""


def check_x(x, name="x", n_features=None, dtype=np.float32):
    """Validate a feature matrix and return it C-contiguous in `dtype` (converted, not
    rejected, when it is a view or another float type)."""
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array of shape (n_samples, n_features), "
                        f"got {type(x).__name__}")
    x = losses_mod.as_array(x, name)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D of shape (n_samples, n_features), "
                         f"got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} has {x.shape[1]} features but the model expects {n_features}")
    raw = x
    if x.dtype != dtype or not x.flags.c_contiguous:  # (errstate costs ~1 us: only if needed)
        with np.errstate(over="ignore"):  # an overflowing cast is reported below, by name
            x = np.ascontiguousarray(x, dtype=dtype)
    if not cpu.all_finite(x.reshape(-1)):  # one pass, no boolean temporary
        if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
            raise ValueError(f"{name} contains NaN or infinite values")
        raise ValueError(f"{name} has values too large for the model's {np.dtype(dtype).name}")
    return x


def _check_sample_weight(sw, n, dtype, name="sample_weight"):
    if sw is None:
        return None
    sw = losses_mod.as_array(sw, name)
    if sw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {sw.dtype}")
    if sw.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match x, got shape {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=dtype)
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    return sw


class _Workspace:
    """The per-step buffers for one batch size: the gathered batch, and per layer the
    pre-activations, outputs, incoming gradients (dout) and deltas (dpre)."""

    def __init__(self, sizes, n, dtype, y_shape, y_dtype, weighted):
        self.n = n
        self.x = np.empty((n, sizes[0]), dtype)
        self.y = np.empty((n,) + y_shape, y_dtype)
        self.sw = np.empty(n if weighted else 0, dtype)
        self.pre = [np.empty((n, o), dtype) for o in sizes[1:]]
        self.out = [np.empty((n, o), dtype) for o in sizes[1:]]
        self.dout = [np.empty((n, o), dtype) for o in sizes[1:]]
        self.dpre = [np.empty((n, o), dtype) for o in sizes[1:]]


class Sequential:
    """A linear stack of Dense layers; the last one emits logits.

    Parameters
    ----------
    layers : list of Dense
    seed : int, default 0
        Seeds np.random.default_rng, used for the initial weights and for shuffling, so the
        same seed gives a bitwise identical fit on the CPU.
    dtype : {"float32", "float64"}, default "float32"
    device : {"cpu", "cuda", "auto"}, default "cpu"
        Where fit, evaluate and predict run (fastnn.cuda_backend): "cuda" keeps data,
        parameters and optimizer state on the GPU for the whole fit and raises
        cuda_backend.DeviceUnavailableError when no GPU is usable; "auto" picks the GPU when
        one is usable, else the CPU. `params` stays the host copy, refreshed after each fit.

    Attributes
    ----------
    params : ndarray of shape (P,)
        Every parameter, layer by layer: W (row-major) then b (kernels.layout.mlp_layout).
        Each layer's W and b are views into it.
    """

    def __init__(self, layers, seed=0, dtype="float32", device="cpu"):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one Dense layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layers[{i}] must be a fastnn.Dense, got {type(layer).__name__}")
        for i, layer in enumerate(layers[1:], 1):
            if layer.input_dim is not None and layer.input_dim != layers[i - 1].units:
                raise ValueError(f"layers[{i}].input_dim={layer.input_dim} but layers[{i - 1}] "
                                 f"has {layers[i - 1].units} units")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        from .cuda_backend import resolve_device
        self._device = resolve_device(device)  # "cpu" or "cuda": what runs the kernels
        self.device = device.lower()
        self.layers = layers
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.params = None
        self.optimizer = self.loss = None
        self.metrics = []
        self.stop_training = False
        self._workspaces = {}
        if layers[0].input_dim is not None:
            self.build(layers[0].input_dim)

    # ------------------------------------------------------------------ structure

    @property
    def built(self):
        return self.params is not None

    @property
    def n_outputs(self):
        return self.layers[-1].units

    def build(self, input_dim):
        """Allocate the flat buffer for `input_dim` input features and initialise it."""
        self.sizes = np.array([input_dim] + [l.units for l in self.layers], np.int64)
        bias = [l.use_bias for l in self.layers]
        self.w_off, self.b_off, n_params = mlp_layout(self.sizes, bias)
        self.acts = np.array([l.act_code for l in self.layers], np.int64)
        self.params = np.zeros(n_params, self.dtype)
        self.grads = np.zeros(n_params, self.dtype)
        weights, biases = self._views(self.params)
        grad_w, grad_b = self._views(self.grads)
        for layer, w, b, gw, gb in zip(self.layers, weights, biases, grad_w, grad_b):
            layer.W, layer.b, layer.dW, layer.db = w, b, gw, gb
            # scratch for 2 λ W, so the regularizer's gradient adds without a temporary
            layer._reg_scratch = np.empty_like(w) if layer.kernel_regularizer else None
        for layer in self.layers:
            layer.initialize(self.rng)
        self._workspaces = {}
        if self.optimizer is not None:
            self.optimizer.build(n_params, self.dtype)

    def _views(self, flat):
        """Per-layer (fan_in, fan_out) weight views and (fan_out,) bias views into `flat`."""
        w_off, b_off = self.w_off, self.b_off
        ws, bs = [], []
        for l in range(len(self.layers)):
            fan_in, fan_out = int(self.sizes[l]), int(self.sizes[l + 1])
            ws.append(flat[w_off[l]:w_off[l] + fan_in * fan_out].reshape(fan_in, fan_out))
            bs.append(flat[b_off[l]:b_off[l] + fan_out] if b_off[l] >= 0 else flat[:0])
        return ws, bs

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(f"{what}: the model is not built yet; call fit() first or give "
                               "the first layer input_dim")

    # ------------------------------------------------------------------ compile

    def compile(self, optimizer="sgd", loss="softmax_cross_entropy", metrics=None):
        """Set the optimizer, the loss and the metrics reported by fit and evaluate.

        Parameters
        ----------
        optimizer : str or fastnn.optim.Optimizer, default "sgd"
        loss : str or fastnn.losses.Loss, default "softmax_cross_entropy"
        metrics : list of str, optional
            From "accuracy", "mse", "mae".
        """
        optimizer = optim.get(optimizer)
        loss = losses_mod.get(loss)
        metrics = list(metrics or [])
        for m in metrics:
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; valid: {', '.join(METRICS)}")
        if "accuracy" in metrics and isinstance(loss, losses_mod.MSE):
            raise ValueError("metric 'accuracy' needs a classification loss, not mse")
        self.optimizer, self.loss, self.metrics = optimizer, loss, metrics
        if self.built:
            optimizer.build(self.params.size, self.dtype)

    def _require_compiled(self, what):
        if self.loss is None:
            raise RuntimeError(f"{what}: call compile() first")

    # ------------------------------------------------------------------ validation

    def _check_xy(self, x, y, sample_weight=None, names=("x", "y", "sample_weight")):
        n_features = self.layers[0].input_dim if not self.built else int(self.sizes[0])
        x = self._check_x(x, names[0], n_features)
        from .cuda_backend import to_host  # GPU labels/targets are validated on the host
        y, sample_weight = to_host(y), to_host(sample_weight)
        y, kernel = self.loss.prepare(y, self.n_outputs, self.dtype, names[1])
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{names[0]} and {names[1]} have different lengths: "
                             f"{x.shape[0]} and {y.shape[0]}")
        sw = _check_sample_weight(sample_weight, x.shape[0], self.dtype, names[2])
        return x, y, sw, kernel

    def _apply_class_weight(self, class_weight, y, sw):
        """sample weights times each sample's class weight (a new array: sw stays the user's)."""
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be a dict {{class: weight}}, got {class_weight!r}")
        if y.ndim == 1:
            labels, n_classes = y, self.n_outputs
        elif y.shape[1] == 1:
            labels, n_classes = (y[:, 0] > 0).astype(np.int64), 2  # binary: -1 and 0 are class 0
        else:
            raise ValueError("class_weight needs integer labels or binary targets of shape "
                             f"(n_samples, 1), got y of shape {y.shape}")
        table = np.ones(n_classes, self.dtype)
        for key, weight in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) \
                    or not 0 <= key < n_classes:
                raise ValueError(f"class_weight has class {key!r}; classes are 0..{n_classes - 1}")
            if not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"class_weight[{key}] must be a finite number >= 0, "
                                 f"got {weight!r}")
            table[key] = weight
        return table[labels] if sw is None else sw * table[labels]

    def _fusable(self, batch_size, sample_weight):
        """Whether kernels.cpu.sgd_epoch computes exactly what the mini-batch loop would."""
        opt = self.optimizer
        no_bias = all(not l.use_bias for l in self.layers)
        return (batch_size == 1 and type(opt) is optim.SGD and opt.momentum == 0
                # sgd_epoch decays weights only; SGD decays the whole buffer
                and (opt.weight_decay == 0 or no_bias)
                and self.loss.fused_code is not None and sample_weight is None
                and all(l.kernel_regularizer is None for l in self.layers)
                and all(a in codes.DIFFERENTIABLE for a in self.acts))

    # ------------------------------------------------------------------ forward

    def _check_x(self, x, name, n_features):
        """check_x, also for GPU arrays (torch, cupy, numba: __cuda_array_interface__), which a
        cuda model uses where they lie and a cpu model copies to the host."""
        if not isinstance(x, np.ndarray):  # the common case skips the import below
            from .cuda_backend import check_x as device_check_x, is_cuda_array
            if is_cuda_array(x):
                return device_check_x(self, x, name, n_features)
        return check_x(x, name, n_features, self.dtype)

    def _forward(self, x):
        """Logits for x (allocates: inference, not the training step)."""
        if self._device == "cuda":
            from .cuda_backend import predict
            return predict(self, x)
        out = np.empty((x.shape[0], self.n_outputs), self.dtype)
        cpu.fused_mlp_forward(out, x, self.params, self.sizes, self.w_off, self.b_off, self.acts,
                              LEAKY_ALPHA)
        return out

    def _penalty(self):
        """Σ_l λ_l Σ w², the L2 term added to the reported loss."""
        total = 0.0
        for layer in self.layers:
            if layer.kernel_regularizer:
                w = layer.W.ravel()  # a view: W is a contiguous slice of the flat buffer
                total += layer.kernel_regularizer.l2 * float(np.dot(w, w))
        return total

    # ------------------------------------------------------------------ training step

    def _workspace(self, batch_size, y):
        key = (batch_size, y.shape[1:], y.dtype.str)
        ws = self._workspaces.get(key)
        if ws is None:
            # always with a sample-weight buffer; unweighted fits swap in an empty view
            ws = _Workspace(self.sizes, batch_size, self.dtype, y.shape[1:], y.dtype, True)
            self._workspaces[key] = ws
        return ws

    def _backprop(self, ws, kernel):
        """Forward and backward on the batch in ws: self.grads holds d(loss)/d(params) after
        it (L2 terms included); returns the batch's mean loss without the L2 penalty."""
        a = ws.x
        for l, layer in enumerate(self.layers):
            cpu.affine_act_forward(ws.out[l], ws.pre[l], a, layer.W, layer.b, layer.act_code,
                                   LEAKY_ALPHA)
            a = ws.out[l]
        loss = kernel(ws.dout[-1], a, ws.y, ws.sw)
        self.grads.fill(0)  # weight_grad accumulates
        for l in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[l]
            dx = ws.dout[l - 1] if l > 0 else _EMPTY2[self.dtype.char]
            cpu.affine_act_backward(dx, ws.dpre[l], ws.dout[l], ws.pre[l], ws.out[l], layer.W,
                                    layer.act_code, LEAKY_ALPHA)
            cpu.weight_grad(layer.dW, layer.db, ws.x if l == 0 else ws.out[l - 1], ws.dpre[l])
            reg = layer.kernel_regularizer
            if reg:
                np.multiply(layer.W, 2.0 * reg.l2, out=layer._reg_scratch)
                np.add(layer.dW, layer._reg_scratch, out=layer.dW)
        return loss

    def _minibatch_epoch(self, x, y, sw, kernel, batch_size, shuffle, lr):
        """One epoch of mini-batch training in one kernel call (kernels.cpu.minibatch_epoch):
        the per-step cost is the arithmetic, not a Python loop's dispatch."""
        n = x.shape[0]
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        labels, targets = kernel.split(y, self.dtype)
        l2 = np.array([l.kernel_regularizer.l2 if l.kernel_regularizer else 0.0
                       for l in self.layers])
        opt_code, hyper, state1, state2, step = self.optimizer.kernel_args(lr)
        loss, step = cpu.minibatch_epoch(
            self.params, self.grads, state1, state2, x, labels, targets,
            np.zeros(0, self.dtype) if sw is None else sw, order, min(batch_size, n),
            self.sizes, self.w_off, self.b_off, self.acts, LEAKY_ALPHA, l2, kernel.code,
            kernel.label_smoothing, opt_code, hyper, step)
        self.optimizer.set_step(step)
        return loss + self._penalty()

    def _fused_epoch(self, x, y, shuffle, lr):
        n = x.shape[0]
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        code = self.loss.fused_code
        labels = y if code == codes.LOSS_SOFTMAX_CE else np.zeros(0, np.int64)
        targets = y if code != codes.LOSS_SOFTMAX_CE else np.zeros((0, 0), self.dtype)
        return cpu.sgd_epoch(self.params, x, labels, targets, order, self.sizes, self.w_off,
                             self.b_off, self.acts, LEAKY_ALPHA, code, lr,
                             self.optimizer.weight_decay)

    # ------------------------------------------------------------------ fit

    def fit(self, x, y, epochs=1, batch_size=32, shuffle=True, validation_data=None,
            validation_split=0.0, sample_weight=None, class_weight=None, callbacks=None,
            verbose=1, tol=None):
        """Train the model.

        Parameters
        ----------
        x : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,) (class labels) or (n_samples, n_outputs) (targets)
        epochs : int, default 1
        batch_size : int or None, default 32
            1 is per-sample SGD (the fused epoch kernel when it applies), None is full-batch
            gradient descent, anything else mini-batch SGD.
        shuffle : bool, default True
        validation_data : tuple (x_val, y_val) or (x_val, y_val, sample_weight_val), optional
        validation_split : float in [0, 1), default 0
            Fraction of the last samples (before shuffling) held out for validation.
        sample_weight : ndarray of shape (n_samples,), optional
        class_weight : dict {class: weight}, optional
            Multiplies each sample's weight by its class's (classes not named weigh 1).
            Needs integer labels, or binary targets of shape (n_samples, 1).
        callbacks : list of fastnn.callbacks.Callback, optional
        verbose : int, default 1
            0 is silent, otherwise one line per epoch.
        tol : float or None, default None
            Convergence criteria (seed 004), off by default: stop after an epoch whose loss
            changed by less than tol from the previous one, or at which the full-batch
            gradient norm ||dL/dparams|| is below tol (one extra forward and backward pass
            over x per epoch). `history.converged` says which fired ("loss", "gradient").

        Returns
        -------
        History
            `history.history` maps "loss", each metric, and their "val_" versions to
            per-epoch lists.
        """
        self._require_compiled("fit")
        # validate everything before touching any state, so a rejected call changes nothing
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_data is not None and validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real)
                                or not math.isfinite(tol) or tol <= 0):
            raise ValueError(f"tol must be None or a finite number > 0, got {tol!r}")
        callbacks = list(callbacks or [])
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, callbacks_mod.Callback):
                raise TypeError(f"callbacks[{i}] must be a fastnn.callbacks.Callback")
        if any(l.act_code not in codes.DIFFERENTIABLE for l in self.layers):
            bad = [l.activation for l in self.layers if l.act_code not in codes.DIFFERENTIABLE]
            raise ValueError(f"cannot train through activation {bad[0]!r}: its derivative is "
                             "zero almost everywhere")
        x, y, sw, kernel = self._check_xy(x, y, sample_weight)
        if class_weight is not None:
            sw = self._apply_class_weight(class_weight, y, sw)
        val = None
        if validation_split:
            n_val = int(math.floor(x.shape[0] * validation_split))
            if n_val == 0 or n_val == x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves an empty training "
                                 f"or validation set for {x.shape[0]} samples")
            cut = x.shape[0] - n_val
            val = (x[cut:], y[cut:], None if sw is None else sw[cut:], kernel)
            x, y, sw = x[:cut], y[:cut], None if sw is None else sw[:cut]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise TypeError("validation_data must be a tuple (x_val, y_val) or "
                                "(x_val, y_val, sample_weight_val)")
            padded = tuple(validation_data) + (None,) * (3 - len(validation_data))
            names = tuple(f"validation_data[{i}]" for i in range(3))
            xv, yv, swv, vkernel = self._check_xy(*padded, names=names)
            if xv.shape[1] != x.shape[1]:
                raise ValueError(f"validation_data[0] has {xv.shape[1]} features but x has "
                                 f"{x.shape[1]}")
            val = (xv, yv, swv, vkernel)
        log_keys = ["loss"] + self.metrics
        if val is not None:
            log_keys += ["val_" + k for k in log_keys]
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if monitor is not None and monitor not in log_keys:
                raise ValueError(f"{type(cb).__name__} monitors {monitor!r}, which fit does not "
                                 f"log; available: {', '.join(log_keys)}")

        # ----- from here on the call is accepted
        if not self.built:
            self.build(x.shape[1])
        if any(v is None for v in self.optimizer.state().values()):
            self.optimizer.build(self.params.size, self.dtype)
        n = x.shape[0]
        bs = n if batch_size is None else min(batch_size, n)
        if self._device == "cuda":  # the same loop with everything kept on the GPU
            from .cuda_backend import fit as cuda_fit
            return cuda_fit(self, x, y, sw, kernel, val, epochs, bs, shuffle, callbacks,
                            verbose, tol)
        fused = self._fusable(bs, sw)
        history = callbacks_mod.History()
        history.converged = None
        prev_loss = None
        callbacks = [history] + callbacks
        if verbose:
            callbacks.append(callbacks_mod.ProgressBar(epochs))
        for cb in callbacks:
            cb.set_model(self)
        self.stop_training = False
        last_good = np.empty_like(self.params)
        for cb in callbacks:
            cb.on_train_begin()
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            np.copyto(last_good, self.params)
            opt_state = {k: np.copy(v) for k, v in self.optimizer.state().items()}
            lr = self.optimizer.lr_at(epoch)
            if fused:
                loss = self._fused_epoch(x, y, shuffle, lr)
            else:
                loss = self._minibatch_epoch(x, y, sw, kernel, bs, shuffle, lr)
            # the loss is measured before each step, so the epoch's last update can overflow
            # the weights (or the optimizer's moments) while the loss still reads finite
            finite = math.isfinite(loss) and cpu.all_finite(self.params) and all(
                cpu.all_finite(v.reshape(-1)) for v in self.optimizer.state().values()
                if v.dtype.kind == "f")
            if not finite:
                np.copyto(self.params, last_good)
                self._set_optimizer_state(opt_state)
                what = (f"the training loss became {loss}" if not math.isfinite(loss)
                        else "the weights became NaN or infinite")
                raise DivergenceError(
                    f"{what} in epoch {epoch + 1}; the weights from "
                    "the start of that epoch were restored. Lower the learning rate, scale the "
                    "inputs, or clip the targets.")
            logs = {"loss": loss}
            logs.update(self._metrics(x, y))
            if val is not None:
                vlogs = self._evaluate(*val)
                logs.update({"val_" + k: v for k, v in vlogs.items()})
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if tol is not None:
                if prev_loss is not None and abs(loss - prev_loss) < tol:
                    history.converged = "loss"
                elif self._gradient_norm(x, y, sw, kernel) < tol:
                    history.converged = "gradient"
                prev_loss = loss
            if self.stop_training or history.converged:
                break
        for cb in callbacks:
            cb.on_train_end()
        return history

    def _gradient_norm(self, x, y, sw, kernel):
        """||dL/dparams|| of the full-batch loss, through the full-batch workspace."""
        ws = self._workspace(x.shape[0], y)
        ws.x[...], ws.y[...] = x, y
        if sw is None:
            keep, ws.sw = ws.sw, ws.sw[:0]  # empty means "no sample weights" to the kernels
        else:
            ws.sw[...] = sw
        try:
            self._backprop(ws, kernel)
        finally:
            if sw is None:
                ws.sw = keep
        return float(np.sqrt(np.dot(self.grads, self.grads)))

    def _set_optimizer_state(self, state):
        for key, value in state.items():
            if key == "t":
                self.optimizer.t = int(value)
            else:
                np.copyto(self.optimizer.state()[key], value)

    # ------------------------------------------------------------------ inference

    def _metrics(self, x, y, z=None):
        if not self.metrics:
            return {}
        z = self._forward(x) if z is None else z
        out = {}
        for m in self.metrics:
            if m == "accuracy":
                out[m] = self.loss.accuracy(z, y)
            else:
                r = z - y.reshape(z.shape) if y.ndim == 2 else None
                if r is None:
                    raise ValueError(f"metric {m!r} needs real targets of shape (n, outputs)")
                out[m] = float(np.mean(r * r)) if m == "mse" else float(np.mean(np.abs(r)))
        return out

    def _evaluate(self, x, y, sw, kernel):
        if self._device == "cuda":
            from .cuda_backend import evaluate
            return evaluate(self, x, y, sw, kernel)
        z = self._forward(x)
        dz = np.empty_like(z)
        loss = kernel(dz, z, y, np.zeros(0, self.dtype) if sw is None else sw)
        logs = {"loss": loss + self._penalty()}
        logs.update(self._metrics(x, y, z))
        return logs

    def evaluate(self, x, y, sample_weight=None):
        """Loss (mean over samples, plus any L2 penalty) and metrics on (x, y), as a dict."""
        self._require_compiled("evaluate")
        self._require_built("evaluate")
        return self._evaluate(*self._check_xy(x, y, sample_weight))

    def predict(self, x):
        """The last layer's output (logits) of shape (n_samples, n_outputs)."""
        self._require_built("predict")
        return self._forward(self._check_x(x, "x", int(self.sizes[0])))

    def predict_proba(self, x):
        """Class probabilities: softmax of the logits for softmax cross-entropy and KL, one
        sigmoid per output for binary cross-entropy."""
        self._require_compiled("predict_proba")
        kind = self.loss.probabilistic
        if kind is None:
            raise ValueError(f"predict_proba needs a probabilistic loss (softmax_cross_entropy, "
                             f"kl_divergence, binary_cross_entropy), not {self.loss.name}")
        z = self.predict(x)
        p = np.empty_like(z)
        if kind == "softmax":
            cpu.softmax(p, z)
        else:
            cpu.activation_forward(p, z, codes.SIGMOID, 0.0)
        return p

    def sample(self, x, seed=None):
        """Random predictions drawn from predict_proba: one class per row from the softmax, or
        one Bernoulli draw per output for binary cross-entropy (seed 000's randomized rule).

        seed : int, Generator or None; None draws from the model's own generator."""
        p = self.predict_proba(x)
        rng = self.rng if seed is None else np.random.default_rng(seed)
        if self.loss.probabilistic == "sigmoid":
            draws = (rng.random(p.shape) < p).astype(np.int64)
            return draws[:, 0] if p.shape[1] == 1 else draws
        u = rng.random((p.shape[0], 1))
        # the first class whose cumulative probability passes u; clip guards rounding at 1
        return np.minimum((np.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1)

    def predict_classes(self, x):
        """Class labels: argmax of the logits with several outputs, else z > 0 per output."""
        z = self.predict(x)
        if z.shape[1] > 1 and not isinstance(self.loss, losses_mod.BinaryCrossEntropy):
            return np.argmax(z, axis=1)
        classes = (z > 0).astype(np.int64)
        return classes[:, 0] if z.shape[1] == 1 else classes

    # ------------------------------------------------------------------ weights

    def get_weights(self):
        """Copies of the parameters in Keras order: [W0, b0, W1, b1, ...] (no b for a layer
        without bias)."""
        self._require_built("get_weights")
        out = []
        for layer in self.layers:
            out.append(layer.W.copy())
            if layer.use_bias:
                out.append(layer.b.copy())
        return out

    def set_weights(self, weights):
        """Write weights in get_weights' order and shapes into the flat buffer."""
        self._require_built("set_weights")
        targets = [a for layer in self.layers for a in ((layer.W, layer.b) if layer.use_bias
                                                         else (layer.W,))]
        weights = list(weights)
        if len(weights) != len(targets):
            raise ValueError(f"weights must hold {len(targets)} arrays, got {len(weights)}")
        checked = []
        for i, (w, t) in enumerate(zip(weights, targets)):
            w = np.asarray(w)
            if w.dtype.kind not in "biuf":
                raise TypeError(f"weights[{i}] must hold numbers, got dtype {w.dtype}")
            if w.shape != t.shape:
                raise ValueError(f"weights[{i}] must have shape {t.shape}, got {w.shape}")
            if not np.all(np.isfinite(w)):
                raise ValueError(f"weights[{i}] contains NaN or infinite values")
            checked.append(w)
        for w, t in zip(checked, targets):
            t[...] = w

    def count_params(self):
        self._require_built("count_params")
        return int(self.params.size)

    def summary(self, print_fn=print):
        """A table of layers, output shapes and parameter counts; printed and returned."""
        rows = [("Layer", "Activation", "Output shape", "Params")]
        total = 0
        for i, layer in enumerate(self.layers):
            n = layer.n_params
            total += n or 0
            rows.append((f"dense_{i} (Dense)", layer.activation, f"(None, {layer.units})",
                         "?" if n is None else str(n)))
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths))  # noqa: E731
        rule = "-" * len(line(rows[0]))
        body = [line(rows[0]), rule] + [line(r) for r in rows[1:]] + [rule]
        body.append(f"Total params: {total if self.built else '? (not built)'}")
        text = "\n".join(body)
        if print_fn is not None:
            print_fn(text)
        return text

    def get_config(self):
        return {"layers": [l.get_config() for l in self.layers], "seed": self.seed,
                "dtype": self.dtype.name, "device": self.device}

    def save(self, path):
        """Save architecture, weights and optimizer state to an .npz (see fastnn.io.save)."""
        from .io import save
        save(self, path)


# the "absent" dx for the first layer, one per dtype so the kernels keep one specialisation
_EMPTY2 = {"f": np.zeros((0, 0), np.float32), "d": np.zeros((0, 0), np.float64)}
