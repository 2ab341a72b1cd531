"""fastnn's peers, for the benchmarks beside it: NumPy, PyTorch eager and scikit-learn.

Training an MLP with ReLU hidden layers, an identity output and softmax cross-entropy by plain
SGD (fixed lr, no momentum, no weight decay), per sample or in mini-batches, and inference,
each written the way a competent user of that library would write it. Every peer reads and writes parameters in
fastnn's flat buffer layout (kernels.layout.mlp_layout: layer l's W as a (fan_in, fan_out)
row-major block, then its bias), so all of them start from the same weights and can be checked
against each other.

Shape legend
  N = samples, M = samples visited in one epoch, F = features, K = classes, P = parameters
"""
from contextlib import contextmanager

import numpy as np

from ..kernels.layout import layer_views, mlp_layout

try:  # PyTorch is a peer, not a dependency: the bench extra installs it
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - reported by the bench CLI as a skipped peer
    torch = None


def make_data(n, n_features, n_classes, seed):
    """Dense float32 inputs in [0, 1) and uniform int64 labels from default_rng(seed).

    Returns x (N, F) float32 C-contiguous and labels (N,) int64."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_features), dtype=np.float32)
    labels = rng.integers(0, n_classes, size=n, dtype=np.int64)
    return x, labels


def init_params(sizes, dtype, seed):
    """He-uniform weights, W ~ U(-sqrt(6 / fan_in), +sqrt(6 / fan_in)), and zero biases,
    in the flat layout of mlp_layout(sizes). Returns params (P,) of `dtype`."""
    rng = np.random.default_rng(seed)
    w_off, b_off, n_params = mlp_layout(sizes)
    params = np.zeros(n_params, dtype)
    for l in range(len(sizes) - 1):
        fan_in, fan_out = int(sizes[l]), int(sizes[l + 1])
        limit = np.sqrt(6.0 / fan_in)
        params[w_off[l]:w_off[l] + fan_in * fan_out] = rng.uniform(-limit, limit, fan_in * fan_out)
    return params


def _views(params, sizes):
    """Per-layer (W (fan_in, fan_out), b (fan_out,)) views into the flat buffer."""
    sizes = np.asarray(sizes)
    return layer_views(params, sizes, *mlp_layout(sizes)[:2])


# --------------------------------------------------------------------------- NumPy

def numpy_sgd_epoch(params, x, labels, order, sizes, lr):
    """One epoch of per-sample SGD in plain NumPy; updates params (P,) in place.

    Vectorised per layer: a vector-matrix product (BLAS gemv) forward, W @ delta backward,
    a rank-1 update as np.outer into a preallocated buffer and one in-place subtraction.
    Computes in params' dtype. x (N, F); labels (N,); order (M,) sample indices.
    Returns the mean of the per-sample losses, each taken before its update."""
    ws, bs = _views(params, sizes)
    n_layers = len(ws)
    lr = params.dtype.type(lr)  # a typed scalar, so lr * delta stays float32 for float32 params
    # one (fan_in, fan_out) buffer per layer: np.outer writes into it, W -= it, no allocation
    steps = [np.empty_like(w) for w in ws]
    acts = [None] * (n_layers + 1)  # acts[l]: the input of layer l, acts[L]: the logits
    total = 0.0
    for s in order:
        a = x[s]
        acts[0] = a
        for l in range(n_layers):
            a = a @ ws[l]
            a += bs[l]
            if l < n_layers - 1:
                np.maximum(a, 0, out=a)
            acts[l + 1] = a

        # softmax cross-entropy from the logits; subtract the max so exp never overflows
        z = a
        y = labels[s]
        m = z.max()
        e = np.exp(z - m)
        sum_e = e.sum()
        total += float(m + np.log(sum_e) - z[y])
        delta = e / sum_e  # d loss / d z = softmax(z) - onehot(y)
        delta[y] -= 1

        for l in range(n_layers - 1, -1, -1):
            if l > 0:
                # backpropagate through W before it is updated; ReLU'(0) = 0, and
                # relu(pre) > 0 exactly where pre > 0, so the mask comes from the activation
                dprev = ws[l] @ delta
                dprev *= acts[l] > 0
            step = lr * delta
            np.outer(acts[l], step, out=steps[l])
            ws[l] -= steps[l]
            bs[l] -= step
            if l > 0:
                delta = dprev
    return total / max(len(order), 1)


def numpy_minibatch_epoch(params, x, labels, order, sizes, lr, batch_size):
    """One epoch of mini-batch SGD in plain NumPy (the mean loss over each batch); updates
    params (P,) in place and returns the mean of the batch losses. Matrix products go to
    NumPy's BLAS; the elementwise steps are separate NumPy passes, as a user writes them."""
    ws, bs = _views(params, sizes)
    n_layers = len(ws)
    lr = params.dtype.type(lr)
    total, n_batches = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        n = len(idx)
        acts = [x[idx]]
        for l in range(n_layers):
            a = acts[-1] @ ws[l]
            a += bs[l]
            if l < n_layers - 1:
                np.maximum(a, 0, out=a)
            acts.append(a)
        z = acts[-1]
        z = z - z.max(axis=1, keepdims=True)  # so exp never overflows
        e = np.exp(z)
        sum_e = e.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        total += float(np.mean(np.log(sum_e[:, 0]) - z[rows, labels[idx]]))
        n_batches += 1
        delta = e / sum_e
        delta[rows, labels[idx]] -= 1
        delta *= params.dtype.type(1.0 / n)
        for l in range(n_layers - 1, -1, -1):
            dprev = delta @ ws[l].T if l > 0 else None
            ws[l] -= lr * (acts[l].T @ delta)
            bs[l] -= lr * delta.sum(axis=0)
            if l > 0:
                dprev *= acts[l] > 0
                delta = dprev
    return total / max(n_batches, 1)


def numpy_predict(params, x, sizes):
    """Logits of the MLP for x (N, F): one BLAS product and two NumPy passes per layer."""
    ws, bs = _views(params, sizes)
    a = x
    for l in range(len(ws)):
        a = a @ ws[l]
        a += bs[l]
        if l < len(ws) - 1:
            np.maximum(a, 0, out=a)
    return a


# --------------------------------------------------------------------------- PyTorch

@contextmanager
def torch_threads(n):
    """Run the block with torch's intra-op thread pool at n threads, then restore it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchMLP:
    """torch.nn.Sequential of Linear + ReLU (identity output) and torch.optim.SGD, float32,
    loaded from and read back into fastnn's flat buffer layout.

    nn.Linear keeps its weight as (fan_out, fan_in) and computes x @ weight.T + bias, so
    weight = W.T for fastnn's (fan_in, fan_out) block W."""

    def __init__(self, params, sizes, lr):
        self.sizes = [int(s) for s in sizes]
        layers = []
        for l in range(len(self.sizes) - 1):
            layers.append(nn.Linear(self.sizes[l], self.sizes[l + 1], dtype=torch.float32))
            if l < len(self.sizes) - 2:
                layers.append(nn.ReLU())
        self.model = nn.Sequential(*layers)
        self.linears = [m for m in self.model if isinstance(m, nn.Linear)]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        self.load(params)

    def load(self, params):
        """Copy the flat buffer params (P,) into the model's Linear layers."""
        ws, bs = _views(np.asarray(params, np.float32), self.sizes)
        with torch.no_grad():
            for lin, w, b in zip(self.linears, ws, bs):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(torch.from_numpy(b.copy()))

    def flat_params(self):
        """The model's weights as a new float32 flat buffer (P,) in mlp_layout order."""
        _, _, n_params = mlp_layout(self.sizes)
        params = np.empty(n_params, np.float32)
        ws, bs = _views(params, self.sizes)
        with torch.no_grad():
            for lin, w, b in zip(self.linears, ws, bs):
                w[...] = lin.weight.numpy().T
                b[...] = lin.bias.numpy()
        return params

    def epoch(self, x, labels, order):
        """One epoch, one sample at a time in eager mode: forward, F.cross_entropy, backward,
        optimizer.step, zero_grad. x (N, F) float32 tensor; labels (N,) int64 tensor;
        order: a list of Python ints. Returns the mean of the per-sample losses."""
        model, optimizer = self.model, self.optimizer
        total = 0.0
        for s in order:
            # slices, not x[s]: the model sees a batch of one, (1, F), as a training loop would
            loss = F.cross_entropy(model(x[s:s + 1]), labels[s:s + 1])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
        return total / max(len(order), 1)

    def minibatch_epoch(self, x, labels, order, batch_size):
        """One epoch of mini-batch SGD, the mean loss per batch. order: an int64 tensor."""
        model, optimizer = self.model, self.optimizer
        total, n_batches = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), labels[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.item()
            n_batches += 1
        return total / max(n_batches, 1)

    def predict(self, x):
        """Logits for x (N, F) float32 tensor, without autograd."""
        with torch.inference_mode():
            return self.model(x)


def torch_sgd_epoch(params, x, labels, order, sizes, lr, n_threads=1):
    """One epoch of per-sample SGD in PyTorch eager mode; updates params (P,) float32 in
    place and returns the mean loss. A convenience for checks: the benchmarks build a
    TorchMLP once and time only TorchMLP.epoch."""
    net = TorchMLP(params, sizes, lr)
    with torch_threads(n_threads):
        loss = net.epoch(torch.from_numpy(x), torch.from_numpy(labels), [int(s) for s in order])
    params[...] = net.flat_params()
    return loss


# --------------------------------------------------------------------------- scikit-learn

def sklearn_mlp(sizes, lr, batch_size, seed=0):
    """scikit-learn's MLPClassifier with the same architecture and plain SGD, for one epoch
    per fit call (max_iter=1, warm_start so repeated fits continue)."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=tuple(int(s) for s in sizes[1:-1]), activation="relu",
                         solver="sgd", learning_rate_init=lr, momentum=0.0, nesterovs_momentum=False,
                         batch_size=batch_size, max_iter=1, shuffle=False, alpha=0.0, tol=0.0,
                         n_iter_no_change=10**9, random_state=seed, warm_start=True)
