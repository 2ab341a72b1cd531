"""The Keras-like surface of Sequential: it learns, it is reproducible, and evaluate / predict /
get_weights / summary / callbacks / schedules behave as documented."""
import numpy as np
import pytest
from sklearn.datasets import make_blobs, make_moons

import fastnn as fn


def _moons(n=400, seed=0):
    x, y = make_moons(n_samples=n, noise=0.1, random_state=seed)
    return x, y


def _mlp(seed=0, dtype="float32", k=2):
    return fn.Sequential([fn.Dense(32, activation="tanh"), fn.Dense(32, activation="relu"),
                          fn.Dense(k)], seed=seed, dtype=dtype)


def test_two_moons_reaches_high_accuracy():
    x, y = _moons()
    xv, yv = _moons(200, seed=1)
    model = _mlp()
    model.compile(optimizer=fn.optim.Adam(lr=0.01), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    hist = model.fit(x, y, epochs=60, batch_size=32, validation_data=(xv, yv), verbose=0)
    # noise 0.1 moons are separable by a small MLP; 60 Adam epochs reach ~100% (margin for seeds)
    assert hist.history["val_accuracy"][-1] >= 0.97
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(hist.history["loss"]) == 60


@pytest.mark.parametrize("batch_size", [1, 16, None])
def test_blobs_with_every_fit_regime(batch_size):
    x, y = make_blobs(n_samples=300, centers=4, n_features=5, random_state=0)
    x = (x - x.mean(0)) / x.std(0)
    model = fn.Sequential([fn.Dense(16, activation="relu", kernel_initializer="he_uniform"),
                           fn.Dense(4)], seed=1)
    model.compile(optimizer=fn.optim.SGD(lr=0.5 if batch_size is None else 0.05),
                  loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=40 if batch_size is None else 10, batch_size=batch_size, verbose=0)
    assert model.evaluate(x, y)["accuracy"] >= 0.95


@pytest.mark.parametrize("batch_size", [1, 7])
def test_seed_makes_fit_bitwise_reproducible(batch_size):
    x, y = _moons(100)
    runs = []
    for seed in (5, 5, 6):
        model = _mlp(seed=seed)
        model.compile(optimizer=fn.optim.SGD(lr=0.05), loss="softmax_cross_entropy")
        hist = model.fit(x, y, epochs=3, batch_size=batch_size, verbose=0)
        runs.append((model.params.copy(), hist.history["loss"]))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_float64_model_and_conversion_of_inputs():
    x, y = _moons(50)
    model = _mlp(dtype="float64")
    model.compile(loss="softmax_cross_entropy")
    # a non-contiguous int view is converted, not rejected
    model.fit(np.asfortranarray(x)[::1], y.astype(np.int32), epochs=1, verbose=0)
    assert model.params.dtype == np.float64 and model.predict(x).dtype == np.float64
    m32 = _mlp()
    m32.compile(loss="softmax_cross_entropy")
    m32.fit(x[::2].T.copy().T, y[::2], epochs=1, verbose=0)  # float64 F-order into float32
    assert m32.predict(x).dtype == np.float32


def test_parameters_live_in_one_flat_buffer():
    model = fn.Sequential([fn.Dense(4, input_dim=3), fn.Dense(2, use_bias=False)])
    assert model.params.size == 3 * 4 + 4 + 4 * 2
    for layer in model.layers:
        assert np.shares_memory(layer.W, model.params)
    model.layers[0].W[0, 0] = 123.0
    assert model.params[0] == 123.0
    assert model.layers[1].b.size == 0 and np.all(model.layers[0].b == 0)


@pytest.mark.parametrize("init", sorted(fn.layers.INITIALIZERS))
def test_initializers_have_their_scale(init):
    model = fn.Sequential([fn.Dense(400, kernel_initializer=init, input_dim=300)], seed=0,
                          dtype="float64")
    w = model.layers[0].W
    expected_std = {"glorot_uniform": np.sqrt(2 / 700), "glorot_normal": np.sqrt(2 / 700),
                    "he_uniform": np.sqrt(2 / 300), "he_normal": np.sqrt(2 / 300),
                    "lecun_normal": np.sqrt(1 / 300), "uniform": 0.1 / np.sqrt(12),
                    "normal": 0.05, "zeros": 0.0}[init]
    # 120k draws: the sample std is within 2% of the population std
    np.testing.assert_allclose(w.std(), expected_std, rtol=0.02)


def test_evaluate_predict_shapes_and_probabilities():
    x, y = _moons(60)
    model = _mlp(k=2)
    model.compile(loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    res = model.evaluate(x, y)
    assert set(res) == {"loss", "accuracy"} and res["loss"] > 0
    assert model.predict(x).shape == (60, 2)
    p = model.predict_proba(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)  # float32 softmax rows
    np.testing.assert_array_equal(model.predict_classes(x), np.argmax(model.predict(x), 1))

    bce = fn.Sequential([fn.Dense(8, activation="relu"), fn.Dense(1)])
    bce.compile(loss="binary_cross_entropy", metrics=["accuracy"])
    bce.fit(x, y, epochs=2, verbose=0)
    z = bce.predict(x)
    np.testing.assert_allclose(bce.predict_proba(x), 1 / (1 + np.exp(-z)), rtol=1e-5)
    np.testing.assert_array_equal(bce.predict_classes(x), (z[:, 0] > 0).astype(int))

    reg = fn.Sequential([fn.Dense(2)])
    reg.compile(loss="mse", metrics=["mse", "mae"])
    reg.fit(x, x * 2, epochs=1, verbose=0)
    assert set(reg.evaluate(x, x * 2)) == {"loss", "mse", "mae"}
    with pytest.raises(ValueError, match="predict_proba"):
        reg.predict_proba(x)


def test_get_set_weights_roundtrip_and_order():
    model = fn.Sequential([fn.Dense(4, input_dim=3), fn.Dense(2, use_bias=False)])
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(3, 4), (4,), (4, 2)]
    new = [np.full(w.shape, i + 1.0) for i, w in enumerate(ws)]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    before = model.params.copy()
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        model.set_weights([new[0], new[1], np.zeros((2, 4))])
    with pytest.raises(ValueError, match="3 arrays"):
        model.set_weights(new[:2])
    np.testing.assert_array_equal(model.params, before)


def test_summary_lists_shapes_and_counts():
    model = fn.Sequential([fn.Dense(4, activation="relu", input_dim=3), fn.Dense(2)])
    text = model.summary(print_fn=None)
    assert "(None, 4)" in text and "16" in text and "10" in text and "Total params: 26" in text


def test_l2_regularizer_adds_to_loss():
    x, y = _moons(40)
    model = fn.Sequential([fn.Dense(3, kernel_regularizer=fn.L2(0.5), input_dim=2)],
                          dtype="float64")
    model.compile(loss="softmax_cross_entropy")
    plain = fn.Sequential([fn.Dense(3, input_dim=2)], dtype="float64")
    plain.compile(loss="softmax_cross_entropy")
    w = model.layers[0].W
    expected = plain.evaluate(x, y)["loss"] + 0.5 * np.sum(w * w)
    np.testing.assert_allclose(model.evaluate(x, y)["loss"], expected, rtol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_training_allocates_per_epoch_not_per_step(batch_size):
    """Numba's runtime counts its allocations: an epoch of 4x the steps must allocate exactly
    as often as a short one, so no buffer is allocated per step (batch 1 runs the fused
    per-sample kernel, batch 8 the fused mini-batch kernel)."""
    from numba.core.runtime import _nrt_python, rtsys

    def allocations_for(n):
        x, y = _moons(n)
        model = _mlp()
        model.compile(loss="softmax_cross_entropy")
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # compile, build
        before = rtsys.get_allocation_stats().alloc
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
        return rtsys.get_allocation_stats().alloc - before

    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()  # off unless NUMBA_NRT_STATS=1: switch on for this test
    try:
        short, long = allocations_for(40), allocations_for(160)
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    assert short == long
    assert short > 0  # the count is live: the epoch's own buffers are in it


# --------------------------------------------------------------------------- schedules, callbacks

def test_schedules():
    o = fn.optim
    assert o.Constant()(0.1, 7) == 0.1
    np.testing.assert_allclose(o.InverseScaling(0.5)(0.1, 3), 0.1 / 2)
    assert o.StepDecay(drop=0.5, every=2)(1.0, 5) == 0.25
    cos = o.Cosine(epochs=4, min_lr=0.0)
    np.testing.assert_allclose([cos(1.0, e) for e in range(5)],
                               [1.0, (1 + np.cos(np.pi / 4)) / 2, 0.5, (1 + np.cos(3 * np.pi / 4)) / 2, 0.0],
                               atol=1e-15)


def test_schedule_sets_each_epochs_learning_rate(monkeypatch):
    x, y = _moons(20)
    model = _mlp()
    model.compile(optimizer=fn.optim.SGD(lr=0.1, schedule=fn.optim.StepDecay(0.5, 1)),
                  loss="softmax_cross_entropy")
    seen = []
    real = fn.models.cpu.sgd_epoch
    monkeypatch.setattr(fn.models.cpu, "sgd_epoch", lambda *a: seen.append(a[13]) or real(*a))
    model.fit(x, y, epochs=3, batch_size=1, verbose=0)
    np.testing.assert_allclose(seen, [0.1, 0.05, 0.025])


def test_callback_protocol_and_learning_rate_scheduler():
    events = []

    class Recorder(fn.callbacks.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(("epoch", epoch, self.model.optimizer.lr))

        def on_epoch_end(self, epoch, logs=None):
            events.append(("end", epoch, sorted(logs)))

        def on_train_end(self, logs=None):
            events.append("done")

    x, y = _moons(20)
    model = _mlp()
    model.compile(optimizer=fn.optim.SGD(lr=1.0), loss="softmax_cross_entropy")
    sched = fn.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[sched, Recorder()])
    assert events == ["begin", ("epoch", 0, 0.1), ("end", 0, ["loss"]), ("epoch", 1, 0.05),
                      ("end", 1, ["loss"]), "done"]


def test_early_stopping_stops_and_restores_best_weights():
    x, y = _moons(100)
    model = _mlp()
    model.compile(optimizer=fn.optim.SGD(lr=0.05), loss="softmax_cross_entropy")
    best = {}

    class Track(fn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best[epoch] = (logs["loss"], self.model.params.copy())

    # the monitored "loss" is improved only by more than a huge min_delta: never after epoch 0
    stop = fn.callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=1e9,
                                      restore_best_weights=True)
    hist = model.fit(x, y, epochs=20, verbose=0, callbacks=[Track(), stop])
    assert len(hist.history["loss"]) == 3 and stop.stopped_epoch == 2
    np.testing.assert_array_equal(model.params, best[0][1])


def test_early_stopping_on_missing_log_is_rejected_before_training():
    x, y = _moons(20)
    model = _mlp()
    model.compile(loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match="val_loss"):
        model.fit(x, y, callbacks=[fn.callbacks.EarlyStopping()], verbose=0)
    assert not model.built


def test_divergence_raises_and_keeps_last_finite_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3))
    y = 1e4 * rng.standard_normal((64, 1))
    model = fn.Sequential([fn.Dense(8, activation="relu"), fn.Dense(1)])
    model.compile(optimizer=fn.optim.SGD(lr=1.0), loss="mse")
    starts = []

    class Snap(fn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts.append(self.model.params.copy())

    with pytest.raises(fn.DivergenceError, match="restored"):
        model.fit(x, y, epochs=50, batch_size=8, verbose=0, callbacks=[Snap()])
    assert isinstance(fn.DivergenceError("x"), FloatingPointError)
    assert np.all(np.isfinite(model.params))
    np.testing.assert_array_equal(model.params, starts[-1])


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_progress_bar_reports_each_epoch_and_verbose_0_is_silent(use_tqdm, capsys):
    import io

    x, y = _moons(40)
    model = _mlp()
    model.compile(loss="softmax_cross_entropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""
    buf = io.StringIO()
    bar = fn.callbacks.ProgressBar(3, use_tqdm=use_tqdm, file=buf)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[bar])
    text = buf.getvalue()
    if use_tqdm:
        assert "3/3" in text and "accuracy" in text
    else:
        assert [line.split(" - ")[0] for line in text.strip().splitlines()] == [
            "Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
        assert "loss: " in text and "accuracy: " in text
    model.fit(x, y, epochs=1, batch_size=8, verbose=1)  # tqdm writes to stderr, lines to stdout
    captured = capsys.readouterr()
    assert "Epoch 1/1" in captured.out or "1/1" in captured.err
