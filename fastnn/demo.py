"""`python -m fastnn demo`: train an MLP on generated data with the fused per-sample SGD epoch
and report samples/s. A first look at fastnn's speed; the benchmark suite (benchmarks/) holds the
measured comparisons with NumPy and PyTorch."""
import time

import numpy as np

from .kernels import codes, cpu
from .kernels.layout import layer_views, mlp_layout


def make_blobs(n_samples, n_features, n_classes, seed, noise=8.0):
    """Gaussian classes around random centres, standardised: a problem an MLP learns well
    in a few epochs but not in one step."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, n_features))
    y = rng.integers(0, n_classes, n_samples)
    x = centres[y] + noise * rng.standard_normal((n_samples, n_features))
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, y


def he_uniform(sizes, seed, dtype):
    """A flat parameter buffer: He-uniform weights for the ReLU layers, zero biases."""
    rng = np.random.default_rng(seed)
    w_off, b_off, p = mlp_layout(sizes)
    params = np.zeros(p, dtype)
    for l in range(len(sizes) - 1):
        limit = np.sqrt(6.0 / sizes[l])
        n = sizes[l] * sizes[l + 1]
        params[w_off[l]:w_off[l] + n] = rng.uniform(-limit, limit, n)
    return params, w_off, b_off


def predict(params, x, sizes, w_off, b_off, acts):
    """Class predictions through the batched forward kernel."""
    a = x
    for w, b, act in zip(*layer_views(params, np.asarray(sizes), w_off, b_off), acts):
        out = np.empty((a.shape[0], w.shape[1]), params.dtype)
        pre = np.empty_like(out)
        cpu.affine_act_forward(out, pre, a, w, b, act, 0.0)
        a = out
    return np.argmax(a, axis=1)


def run(hidden=128, n_samples=20_000, epochs=5, lr=0.001, dtype="float32", seed=0, out=print):
    dtype = np.dtype(dtype)
    n_features, n_classes = 784, 10
    x, y = make_blobs(n_samples + 2000, n_features, n_classes, seed)
    x = x.astype(dtype)
    x_train, y_train, x_test, y_test = x[:n_samples], y[:n_samples], x[n_samples:], y[n_samples:]
    sizes = np.array([n_features, hidden, n_classes])
    acts = np.array([codes.RELU, codes.IDENTITY])
    params, w_off, b_off = he_uniform(sizes, seed, dtype)
    rng = np.random.default_rng(seed + 1)
    no_targets = np.zeros((0, 0), dtype)
    no_drop = np.zeros(len(acts))  # no dropout

    out(f"fastnn demo: per-sample SGD, MLP {'-'.join(map(str, sizes))} (ReLU, softmax "
        f"cross-entropy), {dtype.name}, {n_samples} generated samples, lr {lr}")
    t0 = time.perf_counter()
    warm = params.copy()  # compile (or load from cache) on a copy, so training starts clean
    cpu.sgd_epoch(warm, x_train, y_train, no_targets, np.arange(2), sizes, w_off, b_off, acts,
                  0.0, no_drop, 0, codes.LOSS_SOFTMAX_CE, lr, 0.0)
    out(f"  kernels ready in {time.perf_counter() - t0:.2f} s (first run compiles; later runs "
        "load the cache)")
    rates = []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n_samples)
        t = time.perf_counter()
        loss = cpu.sgd_epoch(params, x_train, y_train, no_targets, order, sizes, w_off, b_off,
                             acts, 0.0, no_drop, 0, codes.LOSS_SOFTMAX_CE, lr, 0.0)
        seconds = time.perf_counter() - t
        rates.append(n_samples / seconds)
        acc = np.mean(predict(params, x_test, sizes, w_off, b_off, acts) == y_test)
        out(f"  epoch {epoch}: loss {loss:.4f}  test accuracy {acc:.3f}  "
            f"{rates[-1]:,.0f} samples/s")
    out(f"median {np.median(rates):,.0f} samples/s on one core "
        f"({np.median(rates) * (sizes[:-1] * sizes[1:]).sum() * 2 / 1e9:.2f} GFMA/s counting "
        "the forward product and the weight update)")
    return {"samples_per_s": float(np.median(rates)), "test_accuracy": float(acc),
            "final_loss": float(loss)}
