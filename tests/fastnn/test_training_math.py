"""Sequential's training step is the kernels' math, nothing more: the mini-batch loop equals the
NumPy reference twins stepped by hand, batch_size=1 equals the reference fused epoch, and Adam /
SGD agree with PyTorch given the same weights.

Tolerances: float64 throughout; the kernels use BLAS gemm and the twins NumPy matmul, whose
summation orders differ, so a few ulps per operation over a handful of steps: rtol 1e-9."""
import numpy as np
import pytest
import torch

import fastnn as fn
from fastnn.kernels import codes
from fastnn.kernels import reference as ref
from fastnn.kernels.layout import layer_views

RTOL = 1e-9


def _data(n=23, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rng.integers(0, k, n)
    return x, y


def _model(d=5, k=3, reg=None, bias_last=True):
    return fn.Sequential([fn.Dense(7, activation="tanh", input_dim=d, kernel_regularizer=reg),
                          fn.Dense(6, activation="relu"),
                          fn.Dense(k, use_bias=bias_last)], seed=3, dtype="float64")


def _ref_step(model, params, xb, yb, lr, momentum, velocity, reg=0.0):
    """One mini-batch SGD step with the reference twins, on a copy of the flat buffer."""
    sizes, w_off, b_off = model.sizes, model.w_off, model.b_off
    L = len(sizes) - 1
    ws, bs = layer_views(params, sizes, w_off, b_off)
    acts = [layer.act_code for layer in model.layers]
    outs, pres = [xb], []
    for l in range(L):
        pre = np.empty((len(xb), sizes[l + 1]))
        out = np.empty_like(pre)
        ref.affine_act_forward(out, pre, outs[-1], ws[l], bs[l], acts[l], 0.01)
        pres.append(pre)
        outs.append(out)
    dz = np.empty_like(outs[-1])
    ref.softmax_cross_entropy(dz, outs[-1], yb, np.zeros(0), 0.0, True)
    grads = np.zeros_like(params)
    gws, gbs = layer_views(grads, sizes, w_off, b_off)
    dout = dz
    for l in range(L - 1, -1, -1):
        dpre = np.empty_like(dout)
        dx = np.empty((len(xb), sizes[l])) if l else np.zeros((0, 0))
        ref.affine_act_backward(dx, dpre, dout, pres[l], outs[l + 1], ws[l], acts[l], 0.01)
        ref.weight_grad(gws[l], gbs[l], outs[l], dpre)
        if l == 0:
            gws[l] += 2 * reg * ws[l]
        dout = dx
    ref.sgd_update(params, grads, velocity, lr, momentum, False, 0.0)


@pytest.mark.parametrize("batch_size", [1, 4, 23, None])  # 4 leaves a partial last batch
@pytest.mark.parametrize("reg", [None, 0.03])
def test_minibatch_fit_equals_reference_steps(batch_size, reg):
    x, y = _data()
    model = _model(reg=reg)
    model.compile(optimizer=fn.optim.SGD(lr=0.05, momentum=0.9), loss="softmax_cross_entropy")
    params = model.params.copy()
    velocity = np.zeros_like(params)
    model.fit(x, y, epochs=2, batch_size=batch_size, shuffle=False, verbose=0)
    bs = len(x) if batch_size is None else batch_size
    for _ in range(2):
        for s in range(0, len(x), bs):
            _ref_step(model, params, x[s:s + bs], y[s:s + bs], 0.05, 0.9, velocity, reg or 0.0)
    np.testing.assert_allclose(model.params, params, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "binary_cross_entropy", "mse"])
def test_batch_size_one_runs_the_fused_epoch_and_equals_reference(loss, monkeypatch):
    x, labels = _data()
    y = labels if loss == "softmax_cross_entropy" else np.eye(3)[labels]
    model = _model()
    model.compile(optimizer=fn.optim.SGD(lr=0.02), loss=loss)
    start = model.params.copy()
    calls = []
    real = fn.cpu_backend.cpu.sgd_epoch
    monkeypatch.setattr(fn.cpu_backend.cpu, "sgd_epoch", lambda *a: calls.append(1) or real(*a))
    hist = model.fit(x, y, epochs=1, batch_size=1, shuffle=False, verbose=0)
    assert calls == [1]  # the whole epoch in one fused call

    code = {"softmax_cross_entropy": codes.LOSS_SOFTMAX_CE, "binary_cross_entropy": codes.LOSS_BCE,
            "mse": codes.LOSS_MSE}[loss]
    ce = code == codes.LOSS_SOFTMAX_CE
    expected_loss = ref.sgd_epoch(start, x, labels if ce else np.zeros(0, np.int64),
                                  np.zeros((0, 0)) if ce else y.astype(float), np.arange(len(x)),
                                  model.sizes, model.w_off, model.b_off, model.acts, 0.01,
                                  np.zeros(len(model.acts)), 0, code, 0.02, 0.0)
    np.testing.assert_allclose(model.params, start, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(hist.history["loss"][0], expected_loss, rtol=RTOL)


def test_fused_and_minibatch_paths_agree():
    """batch_size=1 with all-ones sample weights is the same math outside the fused kernel."""
    x, y = _data()
    a, b = _model(), _model()
    for m in (a, b):
        m.compile(optimizer=fn.optim.SGD(lr=0.02), loss="softmax_cross_entropy")
    ha = a.fit(x, y, epochs=2, batch_size=1, verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=1, sample_weight=np.ones(len(x)), verbose=0)
    np.testing.assert_allclose(a.params, b.params, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=RTOL)


@pytest.mark.parametrize("opt_name", ["adam", "adamw", "sgd_nesterov"])
def test_optimizers_match_torch(opt_name):
    x, y = _data(n=16)
    model = _model()
    ours = {"adam": fn.optim.Adam(lr=0.01, weight_decay=0.01),
            "adamw": fn.optim.AdamW(lr=0.01, weight_decay=0.05),
            "sgd_nesterov": fn.optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)}
    model.compile(optimizer=ours[opt_name], loss="softmax_cross_entropy")
    tw = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    theirs = {"adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
              "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
              "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True,
                                                        weight_decay=0.01)}[opt_name](tw)
    model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(3):
        for s in range(0, 16, 8):
            theirs.zero_grad()
            h = torch.tanh(xt[s:s + 8] @ tw[0] + tw[1])
            h = torch.relu(h @ tw[2] + tw[3])
            z = h @ tw[4] + tw[5]
            torch.nn.functional.cross_entropy(z, yt[s:s + 8]).backward()
            theirs.step()
    for got, want in zip(model.get_weights(), tw):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-7, atol=1e-10)


def test_label_smoothing_and_multiclass_hinge_train_through_minibatch_loop():
    x, y = _data(n=40)
    for loss in (fn.losses.SoftmaxCrossEntropy(label_smoothing=0.1), "hinge", "perceptron"):
        model = _model()
        model.compile(optimizer=fn.optim.SGD(lr=0.05), loss=loss, metrics=["accuracy"])
        hist = model.fit(x, y, epochs=30, batch_size=1, verbose=0)
        assert hist.history["loss"][-1] < hist.history["loss"][0]
