"""The CPU backend: Sequential's operations on the kernels.cpu kernels, over host arrays.

A backend is a module with these names, the same in fastnn.cuda_backend; Sequential picks one
once (from its device) and its fit loop, the only one, calls nothing else:

    forward(stack, params, x)                      logits (N, K) as a NumPy array
    evaluate(stack, params, x, y, sw, kernel)      (loss + L2 penalty, logits)
    gradient(stack, params, x, y, sw, kernel)      (loss + L2 penalty, dL/dparams (P,))
    Trainer(stack, params, optimizer, x, y, sw, kernel, batch_size, per_sample, parallel=None)
        .epoch(order, lr, seed)  one epoch (or a slice of one) over the rows in `order`; the
                                 mean loss, without the L2 penalty; seed: the dropout masks'
        .penalty()               the L2 penalty of the current parameters
        .train_logits()          logits of the training rows, for metrics
        .prepare(x, y, sw, kernel)   validation data where the trainer computes (GPU: uploaded)
        .evaluate(data, with_logits)  (loss + penalty, logits or None) on prepared data
        .gradient_norm()         ||dL/dparams|| of the full-batch training loss (fit's tol)
        .finite()                params and optimizer state hold no NaN or inf
        .save_point(), .restore_point()   the epoch's starting parameters and optimizer state
        .sync_to_host()          model.params and the optimizer's state made current

`stack` is a fastnn.layers.Stack (widths, offsets, activation codes, L2 strengths), `params`
the flat buffer, `kernel` a fastnn.losses.LossKernel; inputs are validated before they get here.
On the CPU the model's own arrays are trained in place, so sync_to_host has nothing to do.

Data-parallel fits (fastnn.distributed) give the Trainer `parallel`, a
fastnn.distributed.DataParallel: its epochs are then kernels.mpi's (one Allreduce of the
gradient per mini-batch step, or local per-sample SGD averaged every `sync_every` rows, inside
the compiled epoch), the epoch loss and gradient_norm are over every rank's rows, and the
other methods stay this rank's own (fit reduces what it logs).
"""
import numpy as np

from .kernels import cpu


class _Buffers:
    """Per-layer buffers of a forward and backward pass over n rows: pre-activations, outputs,
    incoming gradients (dout) and deltas (dpre), plus scratch for 2 λ W."""

    def __init__(self, stack, n):
        widths, dtype = stack.sizes[1:], stack.dtype
        self.pre = [np.empty((n, o), dtype) for o in widths]
        self.out = [np.empty((n, o), dtype) for o in widths]
        self.dout = [np.empty((n, o), dtype) for o in widths]
        self.dpre = [np.empty((n, o), dtype) for o in widths]
        self.no_dx = np.zeros((0, 0), dtype)  # the first layer's "absent" dx
        self.reg = [np.empty((int(stack.sizes[l]), int(stack.sizes[l + 1])), dtype) if lam
                    else None for l, lam in enumerate(stack.l2)]


def _split(y, sw, kernel, dtype):
    labels, targets = kernel.split(y, dtype)
    return labels, targets, np.zeros(0, dtype) if sw is None else sw


def _backprop(stack, params, grads, buf, x, y, sw, kernel):
    """grads = d(mean loss + L2)/d(params) on the rows x through the per-layer kernels;
    returns the mean loss without the L2 penalty."""
    ws, bs = stack.views(params)
    dws, dbs = stack.views(grads)
    a = x
    for l in range(stack.n_layers):
        cpu.affine_act_forward(buf.out[l], buf.pre[l], a, ws[l], bs[l], stack.acts[l],
                               stack.alpha)
        a = buf.out[l]
    loss = kernel(buf.dout[-1], a, y, np.zeros(0, stack.dtype) if sw is None else sw)
    grads.fill(0)  # weight_grad accumulates
    for l in range(stack.n_layers - 1, -1, -1):
        dx = buf.dout[l - 1] if l > 0 else buf.no_dx
        cpu.affine_act_backward(dx, buf.dpre[l], buf.dout[l], buf.pre[l], buf.out[l], ws[l],
                                stack.acts[l], stack.alpha)
        cpu.weight_grad(dws[l], dbs[l], x if l == 0 else buf.out[l - 1], buf.dpre[l])
        if stack.l2[l]:
            np.multiply(ws[l], 2.0 * stack.l2[l], out=buf.reg[l])
            np.add(dws[l], buf.reg[l], out=dws[l])
    return loss


def _l2_gradient(stack, params):
    """The L2 terms' gradient, 2 l2[l] W_l, as a flat buffer."""
    g = np.zeros_like(params)
    for w, dw, lam in zip(stack.views(params)[0], stack.views(g)[0], stack.l2):
        if lam:
            np.multiply(w, 2.0 * lam, out=dw)
    return g


def forward(stack, params, x):
    """Logits for the rows of x (inference: one compiled call for every layer)."""
    out = np.empty((x.shape[0], int(stack.sizes[-1])), stack.dtype)
    cpu.fused_mlp_forward(out, x, params, stack.sizes, stack.w_off, stack.b_off, stack.acts,
                          stack.alpha)
    return out


def evaluate(stack, params, x, y, sw, kernel):
    """(mean loss + L2 penalty, logits) on (x, y)."""
    z = forward(stack, params, x)
    loss = kernel(np.empty_like(z), z, y, np.zeros(0, stack.dtype) if sw is None else sw)
    return loss + stack.penalty(params), z


def gradient(stack, params, x, y, sw, kernel):
    """(mean loss + L2 penalty, d(loss)/d(params)) on the whole of (x, y)."""
    grads = np.zeros_like(params)
    loss = _backprop(stack, params, grads, _Buffers(stack, x.shape[0]), x, y, sw, kernel)
    return loss + stack.penalty(params), grads


class Trainer:
    """One fit on the CPU: the model's params and optimizer state, trained in place.

    per_sample: run each epoch as kernels.cpu.sgd_epoch (per-sample SGD, the fused kernel);
    else kernels.cpu.minibatch_epoch with batches of `batch_size` rows."""

    def __init__(self, stack, params, optimizer, x, y, sw, kernel, batch_size, per_sample,
                 parallel=None):
        self.stack, self.params, self.optimizer = stack, params, optimizer
        self.x, self.y, self.sw, self.kernel = x, y, sw, kernel
        self.batch_size, self.per_sample = batch_size, per_sample
        self.parallel = parallel
        # a data-parallel fit reduces the gradient with one more slot (the rows behind it)
        self.comm = None if parallel is None else np.zeros(params.size + 1, params.dtype)
        self.grads = np.zeros_like(params) if parallel is None else self.comm[:-1]
        self._saved = np.empty_like(params)
        self._saved_state = None
        self._buffers = None  # for gradient_norm, allocated on first use

    def epoch(self, order, lr, seed=0):
        s, k = self.stack, self.kernel
        labels, targets, sw = _split(self.y, self.sw, k, s.dtype)
        if self.parallel is not None:
            return self._parallel_epoch(order, lr, seed, labels, targets, sw)
        if self.per_sample:
            return cpu.sgd_epoch(self.params, self.x, labels, targets, order, s.sizes, s.w_off,
                                 s.b_off, s.acts, s.alpha, s.drop, seed,
                                 k.code, lr, self.optimizer.weight_decay)
        opt_code, hyper, state1, state2, step = self.optimizer.kernel_args(lr)
        loss, step = cpu.minibatch_epoch(
            self.params, self.grads, state1, state2, self.x, labels, targets, sw, order,
            self.batch_size, s.sizes, s.w_off, s.b_off, s.acts, s.alpha, s.l2, s.drop, seed,
            k.code, k.label_smoothing, opt_code, hyper, step)
        self.optimizer.set_step(step)
        return loss

    def _parallel_epoch(self, order, lr, seed, labels, targets, sw):
        s, k, par = self.stack, self.kernel, self.parallel
        if self.per_sample:
            total = par.mpi.local_sgd_epoch(
                self.params, self.comm, self.x, labels, targets, order, par.steps, par.unit,
                s.sizes, s.w_off, s.b_off, s.acts, s.alpha, s.drop, seed, k.code, lr,
                self.optimizer.weight_decay)
        else:
            opt_code, hyper, state1, state2, step = self.optimizer.kernel_args(lr)
            total, step = par.mpi.minibatch_epoch(
                self.params, self.comm, state1, state2, self.x, labels, targets, sw, order,
                par.unit, par.steps, s.sizes, s.w_off, s.b_off, s.acts, s.alpha, s.l2, s.drop,
                seed, k.code, k.label_smoothing, opt_code, hyper, step)
            self.optimizer.set_step(step)
        return par.mean_loss(total)

    def penalty(self):
        return self.stack.penalty(self.params)

    def prepare(self, x, y, sw, kernel):
        return x, y, sw, kernel

    def evaluate(self, data, with_logits=True):
        return evaluate(self.stack, self.params, *data)  # the logits are on the host anyway

    def train_logits(self):
        return forward(self.stack, self.params, self.x)

    def gradient_norm(self):
        if self.parallel is not None:
            return self._parallel_gradient_norm()
        if self._buffers is None:
            self._buffers = _Buffers(self.stack, self.x.shape[0])
        _backprop(self.stack, self.params, self.grads, self._buffers, self.x, self.y, self.sw,
                  self.kernel)
        return float(np.sqrt(np.dot(self.grads, self.grads)))

    def _parallel_gradient_norm(self):
        """||d(mean loss over every rank's rows + L2)/dparams||: the rows-weighted mean of the
        ranks' data gradients, plus the L2 terms once."""
        n = self.x.shape[0]
        l2 = _l2_gradient(self.stack, self.params)
        if n:
            _, g = gradient(self.stack, self.params, self.x, self.y, self.sw, self.kernel)
            np.subtract(g, l2, out=self.grads)
        self.parallel.mpi.reduce_weighted(self.comm, self.grads, n)
        self.grads += l2
        return float(np.sqrt(np.dot(self.grads, self.grads)))

    def finite(self):
        # the loss is measured before each step, so the epoch's last update can overflow the
        # weights (or the optimizer's moments) while the loss still reads finite
        return cpu.all_finite(self.params) and all(
            cpu.all_finite(v.reshape(-1)) for v in self.optimizer.state().values()
            if v is not None and v.dtype.kind == "f")

    def save_point(self):
        np.copyto(self._saved, self.params)
        self._saved_state = {k: np.copy(v) for k, v in self.optimizer.state().items()}

    def restore_point(self):
        np.copyto(self.params, self._saved)
        self.optimizer.set_state(self._saved_state)

    def sync_to_host(self):
        pass
