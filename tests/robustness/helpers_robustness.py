"""Shared pieces of the robustness suite: a small trained model, bitwise snapshots of its state,
and the check that a rejected call names its argument and changed nothing."""
import numpy as np
import pytest

from fastnn import Dense, Sequential

N, FEATURES, CLASSES = 8, 4, 3
RNG = np.random.default_rng(1234)
X = RNG.normal(size=(N, FEATURES)).astype(np.float32)
LABELS = np.arange(N) % CLASSES


def make_model(loss="softmax_cross_entropy", optimizer="adam", dtype="float32", n_out=CLASSES,
               trained=True):
    """A two-layer model, compiled and trained one epoch so the optimizer holds state; the same
    arguments give a bitwise identical model every time."""
    model = Sequential([Dense(5, activation="tanh", input_dim=FEATURES), Dense(n_out)], seed=7,
                       dtype=dtype)
    model.compile(optimizer=optimizer, loss=loss)
    if trained:
        model.fit(X, default_targets(loss, n_out), epochs=1, batch_size=4, verbose=0)
    return model


def default_targets(loss, n_out=CLASSES):
    if loss in ("softmax_cross_entropy", "hinge", "perceptron") and n_out > 1:
        return LABELS
    if loss == "kl_divergence":
        return np.eye(n_out)[LABELS % n_out]
    if loss == "mse":
        return np.linspace(-1, 1, N * n_out).reshape(N, n_out)
    return (np.arange(N * n_out).reshape(N, n_out) % 2).astype(np.float64)


def snapshot(model):
    """Bitwise copies of everything a call could change: parameters, gradients, optimizer
    state and step, the shuffling generator."""
    opt = model.optimizer
    state = {} if opt is None else {k: (np.copy(v) if isinstance(v, np.ndarray) else v)
                                     for k, v in opt.state().items()}
    return {"params": model.params.tobytes(), "state": state,
            "rng": repr(model.rng.bit_generator.state),
            "lr": None if opt is None else opt.lr}


def assert_unchanged(model, snap):
    now = snapshot(model)
    assert now["params"] == snap["params"], "a rejected call changed the parameters"
    assert now["rng"] == snap["rng"], "a rejected call advanced the model's generator"
    assert now["lr"] == snap["lr"]
    assert now["state"].keys() == snap["state"].keys()
    for k, v in snap["state"].items():
        w = now["state"][k]
        if isinstance(v, np.ndarray):
            assert w.tobytes() == v.tobytes(), f"a rejected call changed optimizer state {k}"
        else:
            assert w == v, f"a rejected call changed optimizer state {k}"


def assert_rejected(call, model, argname, errors=(ValueError, TypeError)):
    """call() raises a ValueError/TypeError whose message names `argname`, and leaves the
    model exactly as it was."""
    snap = None if model is None else snapshot(model)
    with pytest.raises(errors) as info:
        call()
    assert argname in str(info.value), f"message does not name {argname!r}: {info.value}"
    if model is not None:
        assert_unchanged(model, snap)
    return info.value
