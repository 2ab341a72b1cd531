"""Keras-style model building and fitting: Sequential().add, layer names, softmax / sigmoid
outputs folded into the fused losses, Keras' names for losses, metrics and optimizers, fit's
Keras arguments, and the in-epoch progress (slices of the epoch give the same steps)."""
import numpy as np
import pytest

import fastnn as fn
from fastnn import models

RNG = np.random.default_rng(0)
X = RNG.standard_normal((60, 6))
Y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # 3 classes


def _added(*layers, **kw):
    model = fn.Sequential(**kw)
    for layer in layers:
        model.add(layer)
    return model


# --------------------------------------------------------------------------- building

def test_add_names_layers_and_gives_the_weights_of_the_list_form():
    added = _added(fn.Dense(8, activation="tanh", input_shape=(6,)), fn.Dropout(0.1),
                   fn.Dense(3, name="out"), seed=4)
    listed = fn.Sequential([fn.Dense(8, activation="tanh", input_dim=6), fn.Dropout(0.1),
                            fn.Dense(3)], seed=4)
    assert [l.name for l in added.layers] == ["dense", "dropout", "out"]
    assert [l.name for l in listed.layers] == ["dense", "dropout", "dense_1"]
    np.testing.assert_array_equal(added.params, listed.params)
    assert added.get_layer("out") is added.layers[2]
    assert added.get_layer(index=0) is added.layers[0]
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        added.get_layer("nope")
    with pytest.raises(ValueError, match="name or an index"):
        added.get_layer()


def test_building_errors_name_the_problem():
    model = fn.Sequential([fn.Dense(4, name="a")])
    with pytest.raises(ValueError, match="named 'a'.*unique"):
        model.add(fn.Dense(2, name="a"))
    with pytest.raises(TypeError, match="fastnn.Dense or fastnn.Dropout"):
        model.add("dense")
    with pytest.raises(ValueError, match="disagree"):
        fn.Dense(3, input_shape=(4,), input_dim=5)
    with pytest.raises(ValueError, match="input_shape must be a tuple"):
        fn.Dense(3, input_shape=4)
    with pytest.raises(ValueError, match="rate must be a number in"):
        fn.Dropout(1.0)
    soft = fn.Sequential([fn.Dense(3, activation="softmax", input_dim=2)])
    with pytest.raises(ValueError, match="output activation only"):
        soft.add(fn.Dense(2))
    trailing = fn.Sequential([fn.Dense(3, input_dim=2), fn.Dropout(0.5)])
    with pytest.raises(ValueError, match="last layer is a Dropout"):
        trailing.compile(loss="mse")
    with pytest.raises(ValueError, match="no Dense layer"):
        fn.Sequential().compile()


def test_summary_reads_like_keras():
    model = _added(fn.Dense(8, activation="relu", input_shape=(6,), name="hidden"),
                   fn.Dropout(0.25), fn.Dense(3, activation="softmax", name="output"))
    text = model.summary(print_fn=None)
    lines = text.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    assert "hidden (Dense, relu)" in text and "(None, 8)" in text and "56" in text
    assert "dropout (Dropout 0.25)" in text and "output (Dense, softmax)" in text
    assert "Total params: 83" in text  # 6*8 + 8 + 8*3 + 3
    assert "not built" in fn.Sequential([fn.Dense(2)]).summary(print_fn=None)


# --------------------------------------------------------------------------- outputs

def test_softmax_output_trains_exactly_as_logits_and_predicts_probabilities():
    """The softmax folds into the fused loss: the same kernels run as for a linear output,
    so the fits are bitwise equal, and predict adds the softmax."""
    fits = []
    for act in ("softmax", None):
        m = fn.Sequential([fn.Dense(5, activation="tanh", input_dim=6),
                           fn.Dense(3, activation=act)], seed=1)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(X, Y, epochs=3, batch_size=16, verbose=0)
        fits.append(m)
    soft, linear = fits
    np.testing.assert_array_equal(soft.params, linear.params)
    p = soft.predict(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)  # float32 rounding of a sum of 3
    np.testing.assert_allclose(p, linear.predict_proba(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(soft.predict_classes(X), linear.predict_classes(X))


def test_sigmoid_output_folds_into_binary_crossentropy_only():
    t = (Y > 0).astype(float)
    fits = []
    for act in ("sigmoid", None):
        m = fn.Sequential([fn.Dense(1, activation=act, input_dim=6)], seed=2, dtype="float64")
        m.compile(optimizer=fn.optim.SGD(learning_rate=0.5), loss="binary_crossentropy")
        m.fit(X, t, epochs=4, batch_size=8, verbose=0)
        fits.append(m)
    folded, linear = fits
    assert folded.output_activation == "sigmoid" and folded.acts[-1] == fn.kernels.codes.IDENTITY
    np.testing.assert_array_equal(folded.params, linear.params)
    z = linear.predict(X)
    np.testing.assert_allclose(folded.predict(X), 1 / (1 + np.exp(-z)), rtol=1e-14)
    # with mse a sigmoid output is an ordinary activation: trained through, not folded
    m = fn.Sequential([fn.Dense(1, activation="sigmoid", input_dim=6)])
    m.compile(loss="mse")
    assert m.output_activation is None and m.acts[-1] == fn.kernels.codes.SIGMOID


@pytest.mark.parametrize("out, loss, match", [
    ("softmax", "mse", "softmax output layer cannot train with mse"),
    ("softmax", "binary_crossentropy", "softmax output layer cannot train"),
    ("sigmoid", "sparse_categorical_crossentropy", "squash twice"),
    ("sigmoid", "kld", "squash twice"),
])
def test_pairings_that_would_squash_twice_are_refused_at_compile(out, loss, match):
    m = fn.Sequential([fn.Dense(3, activation=out, input_dim=6)])
    with pytest.raises(ValueError, match=match):
        m.compile(loss=loss)
    assert m.loss is None  # refused: nothing was set


# --------------------------------------------------------------------------- Keras names

def test_keras_loss_metric_and_optimizer_names():
    for keras, ours in [("sparse_categorical_crossentropy", fn.losses.SoftmaxCrossEntropy),
                        ("binary_crossentropy", fn.losses.BinaryCrossEntropy),
                        ("mean_squared_error", fn.losses.MSE),
                        ("kld", fn.losses.KLDivergence),
                        ("categorical_crossentropy", fn.losses.CategoricalCrossEntropy)]:
        assert type(fn.losses.get(keras)) is ours
    for name, cls in [("sgd", fn.optim.SGD), ("adam", fn.optim.Adam), ("adamw", fn.optim.AdamW),
                      ("rmsprop", fn.optim.RMSprop), ("adagrad", fn.optim.Adagrad)]:
        assert type(fn.optim.get(name)) is cls
    assert fn.optimizers.Adam(lr=0.01).learning_rate == 0.01
    assert fn.optimizers.Adam(learning_rate=0.02, beta_1=0.8, epsilon=1e-7).beta1 == 0.8
    with pytest.raises(ValueError, match="same argument"):
        fn.optim.SGD(learning_rate=0.1, lr=0.2)
    m = fn.Sequential([fn.Dense(3, input_dim=6)])
    m.compile(loss="sparse_categorical_crossentropy", metrics=["acc"])
    hist = m.fit(X, Y, epochs=2, verbose=0, validation_split=0.2)
    assert set(hist.history) == {"loss", "acc", "val_loss", "val_acc"}
    with pytest.raises(ValueError, match="unknown metric"):
        m.compile(metrics=["f1"])


def test_categorical_crossentropy_on_one_hot_equals_the_sparse_loss():
    """The same loss from one-hot rows and from labels: the soft-target and the label kernels
    agree to rounding (float64: 1e-12 after a few steps)."""
    fits = []
    for loss, y in (("categorical_crossentropy", np.eye(3)[Y]),
                    ("sparse_categorical_crossentropy", Y)):
        m = fn.Sequential([fn.Dense(4, activation="relu", input_dim=6), fn.Dense(3)], seed=5,
                          dtype="float64")
        m.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
        fits.append((m, m.fit(X, y, epochs=3, batch_size=10, verbose=0)))
    (a, ha), (b, hb) = fits
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-12)
    assert ha.history["accuracy"] == hb.history["accuracy"]


# --------------------------------------------------------------------------- fit

def test_initial_epoch_resumes_the_count_and_history_has_params(capsys):
    seen = []
    sched = fn.callbacks.LearningRateScheduler(lambda epoch, lr: seen.append(epoch) or lr)
    m = fn.Sequential([fn.Dense(3, input_dim=6)])
    m.compile(loss="sparse_categorical_crossentropy")
    hist = m.fit(X, Y, epochs=5, initial_epoch=3, batch_size=20, callbacks=[sched], verbose=2)
    assert seen == [3, 4] and hist.epoch == [3, 4]
    assert hist.params == {"epochs": 5, "steps": 3, "verbose": 2}
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in out] == ["Epoch 4/5", "Epoch 5/5"]
    with pytest.raises(ValueError, match="initial_epoch"):
        m.fit(X, Y, epochs=2, initial_epoch=3)
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        m.fit(X, Y, verbose=3)
    m.fit(X, Y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("batch_size, opt", [(7, "adam"), (1, "sgd"), (16, "sgd")])
def test_an_epoch_in_slices_takes_the_same_steps(monkeypatch, batch_size, opt):
    """The in-epoch progress runs the compiled epoch over slices of the visiting order, each a
    whole number of batches: the steps, hence the weights, are bitwise those of one call; the
    epoch's loss is the same up to the rounding of its weighted sum (1e-12 relative)."""
    fits = []
    for sliced in (False, True):
        # unsliced: no epoch counts as long (the first one may be long: it compiles kernels)
        monkeypatch.setattr(models._Pace, "LONG_EPOCH", np.inf)
        if sliced:  # every epoch long and a slice of 2 batches (or 2 samples)
            monkeypatch.setattr(models._Pace, "LONG_EPOCH", 0.0)
            monkeypatch.setattr(models._Pace, "SLICE_SECONDS", 0.0)
            monkeypatch.setattr(models._Pace, "PROBE_WORK", 0.0)
            monkeypatch.setattr(models._Pace, "PROBE_ROWS", 2 * batch_size)
        m = fn.Sequential([fn.Dense(5, activation="relu", input_dim=6), fn.Dense(3)], seed=3,
                          dtype="float64")
        m.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        bar = []
        monkeypatch.setattr(fn.callbacks.ProgressBar, "on_epoch_progress",
                            lambda self, done, total, elapsed: bar.append(done))
        hist = m.fit(X, Y, epochs=3, batch_size=batch_size, verbose=1)
        fits.append((m.params.copy(), hist.history["loss"], bar))
    (p0, l0, bar0), (p1, l1, bar1) = fits
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_allclose(l1, l0, rtol=1e-12)
    assert bar0 == [] and len(bar1) >= 3 * 2 and bar1[-1] == len(X)


# --------------------------------------------------------------------------- dropout

def _dropout_model(rate, dtype="float64", device="cpu"):
    layers = [fn.Dense(7, activation="tanh", input_dim=6)]
    if rate is not None:
        layers.append(fn.Dropout(rate))
    return fn.Sequential(layers + [fn.Dense(3)], seed=6, dtype=dtype, device=device)


def test_dropout_trains_reproducibly_and_is_off_at_inference():
    fits = []
    for rate in (0.5, 0.5, None, 0.0):
        m = _dropout_model(rate)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.fit(X, Y, epochs=3, batch_size=8, verbose=0)
        fits.append(m)
    a, b, plain, zero = fits
    np.testing.assert_array_equal(a.params, b.params)  # seeded masks: bitwise reproducible
    assert not np.allclose(a.params, plain.params)  # the masks changed the steps
    np.testing.assert_array_equal(zero.params, plain.params)  # rate 0 draws and drops nothing
    # inference is the identity: the same weights predict the same with or without Dropout
    plain.params[...] = a.params
    np.testing.assert_array_equal(a.predict(X), plain.predict(X))
    a.compile(loss="sparse_categorical_crossentropy")
    plain.compile(loss="sparse_categorical_crossentropy")
    assert a.evaluate(X, Y) == plain.evaluate(X, Y)


def test_dropout_and_new_optimizers_survive_a_checkpoint(tmp_path):
    """Resuming from a checkpoint continues exactly: the architecture with its Dropout, the
    RMSprop / Adagrad state and the generator that draws the next epoch's masks are saved."""
    for opt in (fn.optim.RMSprop(momentum=0.5), fn.optim.Adagrad(lr_decay=0.1)):
        whole = _dropout_model(0.3)
        whole.compile(optimizer=type(opt)(**opt.get_config()), loss="softmax_cross_entropy")
        whole.fit(X, Y, epochs=4, batch_size=8, verbose=0)
        part = _dropout_model(0.3)
        part.compile(optimizer=type(opt)(**opt.get_config()), loss="softmax_cross_entropy")
        part.fit(X, Y, epochs=2, batch_size=8, verbose=0)
        part.save(tmp_path / "m.npz")
        resumed = fn.load(tmp_path / "m.npz")
        assert [type(l).__name__ for l in resumed.layers] == ["Dense", "Dropout", "Dense"]
        resumed.fit(X, Y, epochs=4, initial_epoch=2, batch_size=8, verbose=0)
        np.testing.assert_array_equal(resumed.params, whole.params)


def test_dropout_on_the_gpu_matches_the_cpu():
    """The masks are a hash of (seed, sample, layer, unit), the same on both backends; the GPU
    sums in another order: float64 rounding over 2 epochs of 4 steps, rtol 1e-12."""
    fits = []
    for device in ("cpu", "cuda"):
        m = _dropout_model(0.4, device=device)
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        fits.append((m.fit(X[:16], Y[:16], epochs=2, batch_size=4, verbose=0), m))
    (h_cpu, cpu_m), (h_gpu, gpu_m) = fits
    np.testing.assert_allclose(gpu_m.params, cpu_m.params, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-12)
