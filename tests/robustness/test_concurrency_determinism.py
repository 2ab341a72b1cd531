"""Threads and seeds: predict from several threads on one model equals serial calls, two models
training in two threads do not interfere, and the same seed gives bitwise identical weights on
the CPU through every fit path and the estimators.

Where a parallel path could differ: the forward and backward passes call BLAS (Numba's
np.dot / gemm through SciPy's BLAS), whose multithreaded kernels may split a reduction
differently with a different thread count. Within one process and one BLAS thread setting the
results are bitwise reproducible (checked here); across machines or BLAS thread counts expect
agreement to rounding, not bitwise."""
import threading
import warnings

import numpy as np
import pytest

from fastnn import Dense, Sequential, optim

RNG = np.random.default_rng(11)
X = RNG.normal(size=(64, 6)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def _model(seed=0, optimizer="adam", dtype="float32", momentum=0.0):
    m = Sequential([Dense(16, activation="relu", input_dim=6), Dense(8, activation="tanh"),
                    Dense(3)], seed=seed, dtype=dtype)
    opt = {"adam": optim.Adam(0.01), "sgd": optim.SGD(0.05, momentum=momentum)}[optimizer]
    m.compile(optimizer=opt, loss="softmax_cross_entropy")
    return m


def _run_threads(targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001  reported below
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def test_predict_from_many_threads_equals_serial():
    m = _model()
    m.fit(X, Y, epochs=2, verbose=0)
    chunks = [X[i::5] for i in range(5)] + [X, X[:1]]
    labels = [Y[i::5] for i in range(5)] + [Y, Y[:1]]
    serial = {i: (m.predict(c), m.predict_proba(c), m.predict_classes(c),
                  m.evaluate(c, labels[i])["loss"]) for i, c in enumerate(chunks)}
    before = m.params.tobytes()
    results = {}

    def worker(k):
        def run():
            for _ in range(20):
                for i, c in enumerate(chunks):
                    results[(k, i)] = (m.predict(c), m.predict_proba(c), m.predict_classes(c),
                                       m.evaluate(c, labels[i])["loss"])
        return run

    _run_threads([worker(k) for k in range(6)])
    for (k, i), got in results.items():
        want = serial[i]
        for a, b in zip(got[:3], want[:3]):
            assert a.tobytes() == b.tobytes()
        assert got[3] == want[3]
    assert m.params.tobytes() == before


@pytest.mark.parametrize("batch_size,optimizer", [(1, "sgd"), (8, "adam"), (None, "sgd")])
def test_two_models_training_in_two_threads_do_not_interfere(batch_size, optimizer):
    def fit(seed):
        m = _model(seed, optimizer)
        m.fit(X, Y, epochs=4, batch_size=batch_size, verbose=0)
        return m

    alone = {seed: fit(seed).params.tobytes() for seed in (1, 2)}
    together = {}

    def worker(seed):
        def run():
            for _ in range(3):
                together.setdefault(seed, []).append(fit(seed).params.tobytes())
        return run

    _run_threads([worker(1), worker(2)])
    for seed in (1, 2):
        assert all(p == alone[seed] for p in together[seed]), f"seed {seed} changed in a thread"


def test_training_one_model_while_another_thread_predicts_on_a_different_model():
    trained = _model(3)
    trained.fit(X, Y, epochs=1, verbose=0)
    want = trained.predict(X)
    ref = _model(4)
    ref.fit(X, Y, epochs=5, batch_size=4, verbose=0)
    busy = _model(4)
    preds = []

    _run_threads([lambda: busy.fit(X, Y, epochs=5, batch_size=4, verbose=0),
                  lambda: preds.extend(trained.predict(X) for _ in range(200))])
    assert busy.params.tobytes() == ref.params.tobytes()
    assert all(p.tobytes() == want.tobytes() for p in preds)


FIT_PATHS = {
    "fused_batch1_sgd": dict(batch_size=1, optimizer="sgd"),
    "batch1_momentum": dict(batch_size=1, optimizer="sgd", momentum=0.9),
    "minibatch_adam": dict(batch_size=8, optimizer="adam"),
    "minibatch_sgd_float64": dict(batch_size=5, optimizer="sgd", dtype="float64"),
    "full_batch_sgd": dict(batch_size=None, optimizer="sgd"),
    "full_batch_adam_tol": dict(batch_size=None, optimizer="adam", tol=1e-9),
    "validation_split": dict(batch_size=8, optimizer="adam", validation_split=0.25),
}


@pytest.mark.parametrize("path", sorted(FIT_PATHS))
def test_same_seed_same_weights_bitwise(path):
    kw = dict(FIT_PATHS[path])
    build = {k: kw.pop(k) for k in ("optimizer", "dtype", "momentum") if k in kw}
    runs = []
    for _ in range(2):
        m = _model(seed=42, **build)
        m.fit(X, Y, epochs=3, verbose=0, **kw)
        runs.append((m.params.tobytes(), [np.asarray(v).tobytes() for _, v in
                                          sorted(m.optimizer.state().items())]))
    assert runs[0] == runs[1]
    other = _model(seed=43, **build)
    other.fit(X, Y, epochs=3, verbose=0, **kw)
    assert other.params.tobytes() != runs[0][0], "the seed is not used"


def test_estimators_same_random_state_same_weights_bitwise():
    from fastnn import linear_model as lm
    from fastnn import multiclass as mc
    from fastnn import neural_network as nn
    makers = [lambda: lm.LinearRegression(solver="sgd", max_iter=20, random_state=0),
              lambda: lm.LogisticRegression(batch_size=8, max_iter=20, random_state=0),
              lambda: lm.SoftmaxRegression(max_iter=20, random_state=0),
              lambda: lm.Perceptron(max_iter=5, random_state=0),
              lambda: lm.LinearSVM(batch_size=8, max_iter=20, random_state=0),
              lambda: mc.OneVsRestClassifier(lm.LinearSVM(max_iter=10, random_state=0)),
              lambda: mc.OneVsOneClassifier(lm.LogisticRegression(max_iter=10, random_state=0)),
              lambda: nn.MLPClassifier((8,), max_iter=10, random_state=0),
              lambda: nn.MLPClassifier((8,), max_iter=10, random_state=0, early_stopping=True),
              lambda: nn.MLPRegressor((8,), solver="sgd", max_iter=10, random_state=0)]
    Xd = X.astype(np.float64)
    yr = Xd[:, 0] - 2 * Xd[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for make in makers:
            est = make()
            y = yr if type(est).__name__ in ("LinearRegression", "MLPRegressor") else Y
            a, b = make().fit(Xd, y), make().fit(Xd, y)
            for attr in ("coef_", "intercept_", "coefs_", "intercepts_"):
                if hasattr(a, attr):
                    u, v = getattr(a, attr), getattr(b, attr)
                    u, v = (u, v) if isinstance(u, list) else ([u], [v])
                    assert all(np.asarray(p).tobytes() == np.asarray(q).tobytes()
                               for p, q in zip(u, v)), (type(est).__name__, attr)
            if hasattr(a, "estimators_"):
                for ea, eb in zip(a.estimators_, b.estimators_):
                    assert ea.coef_.tobytes() == eb.coef_.tobytes()
