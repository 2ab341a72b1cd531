"""Hostile inputs through Sequential's public entry points (fit, predict, predict_proba,
predict_classes, evaluate): every case either gives the result of the cleaned input exactly, or
raises ValueError/TypeError naming the argument with the model bitwise unchanged.

Out-of-range labels, which would reach the unchecked kernels, are exercised in a subprocess
in test_out_of_range_labels_subprocess.py; here they only appear where validation is
known to run first and the subprocess suite backs that up."""
import numpy as np
import pytest
import torch
from helpers_robustness import (CLASSES, FEATURES, LABELS, N, X, assert_rejected,
                                assert_unchanged, default_targets, make_model, snapshot)

# --------------------------------------------------------------------------- x cases

def _noncontig():
    wide = np.zeros((N, 2 * FEATURES), np.float32)
    wide[:, ::2] = X
    return wide[:, ::2]


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# id -> x that must give exactly the result of X (same values, another form)
X_SAME = {
    "float64": lambda: X.astype(np.float64),
    "fortran": lambda: np.asfortranarray(X),
    "noncontiguous": _noncontig,
    "readonly": lambda: _readonly(X),
    "list_of_lists": lambda: X.tolist(),
    "tuple_of_tuples": lambda: tuple(map(tuple, X.tolist())),
    "torch_cpu_tensor": lambda: torch.from_numpy(X.copy()),
    "matrix": lambda: np.asmatrix(X),
    "reversed_rows_view": lambda: X[::-1][::-1],
}

# id -> (x, clean x): converted exactly, results must match the clean input's
X_CONVERTED = {
    "int32": lambda: (np.arange(N * FEATURES, dtype=np.int32).reshape(N, FEATURES) - 10,
                      np.arange(N * FEATURES).reshape(N, FEATURES).astype(np.float32) - 10),
    "int64": lambda: (np.arange(N * FEATURES).reshape(N, FEATURES) - 10,
                      np.arange(N * FEATURES).reshape(N, FEATURES).astype(np.float32) - 10),
    "uint8": lambda: (np.arange(N * FEATURES, dtype=np.uint8).reshape(N, FEATURES),
                      np.arange(N * FEATURES).reshape(N, FEATURES).astype(np.float32)),
    "bool": lambda: (X > 0, (X > 0).astype(np.float32)),
    "float16": lambda: (X.astype(np.float16), X.astype(np.float16).astype(np.float32)),
    "huge_1e30": lambda: (np.full((N, FEATURES), 1e30, np.float32),
                          np.full((N, FEATURES), 1e30, np.float32)),
    "tiny_denormal": lambda: (np.full((N, FEATURES), 1e-40, np.float32),
                              np.full((N, FEATURES), 1e-40, np.float32)),
}

# id -> x that must be rejected with a message naming x
X_BAD = {
    "nan": lambda: np.where(np.eye(N, FEATURES) > 0, np.nan, X),
    "+inf": lambda: np.where(np.eye(N, FEATURES) > 0, np.inf, X),
    "-inf": lambda: np.where(np.eye(N, FEATURES) > 0, -np.inf, X),
    "nan_float16": lambda: np.full((N, FEATURES), np.nan, np.float16),
    "1e300_into_float32": lambda: np.full((N, FEATURES), 1e300),
    "1d": lambda: X[0],
    "3d": lambda: X[None],
    "0d": lambda: np.float32(1.0),
    "empty_rows": lambda: np.zeros((0, FEATURES), np.float32),
    "empty_cols": lambda: np.zeros((N, 0), np.float32),
    "empty_list": lambda: [],
    "one_feature": lambda: X[:, :1],
    "too_many_features": lambda: np.hstack([X, X]),
    "strings": lambda: X.astype(str),
    "bytes": lambda: b"1234",
    "str": lambda: "x",
    "object_numbers": lambda: X.astype(object),
    "object_mixed": lambda: np.array([[1, "a", None, 2.0]] * N, dtype=object),
    "complex": lambda: X.astype(np.complex64),
    "datetime": lambda: np.zeros((N, FEATURES), "datetime64[s]"),
    "none": lambda: None,
    "dict": lambda: {"x": X},
    "ragged_list": lambda: [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]],
    "torch_requires_grad": lambda: torch.tensor(X, requires_grad=True),
    "structured": lambda: np.zeros(N, dtype=[("a", "f4"), ("b", "f4")]),
}

ENTRY_X = ["predict", "predict_proba", "predict_classes", "evaluate", "fit"]


_LABELS = object()


def _call(model, entry, x, y=_LABELS):
    y = LABELS if y is _LABELS else y
    if entry == "evaluate":
        return model.evaluate(x, y)
    if entry == "fit":
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        return model.params.copy()
    return getattr(model, entry)(x)


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])), k
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("entry", ENTRY_X)
@pytest.mark.parametrize("case", sorted(X_SAME))
def test_x_in_another_form_gives_the_same_result(entry, case):
    got = _call(make_model(), entry, X_SAME[case]())
    want = _call(make_model(), entry, X)
    _same(got, want)


@pytest.mark.parametrize("entry", ENTRY_X)
@pytest.mark.parametrize("case", sorted(X_CONVERTED))
def test_x_of_other_dtypes_and_magnitudes_is_converted_exactly(entry, case):
    bad, clean = X_CONVERTED[case]()
    model = make_model()
    got = _call(model, entry, bad)
    _same(got, _call(make_model(), entry, clean))
    if entry in ("predict", "predict_proba", "fit"):
        assert np.all(np.isfinite(got))  # 1e30 saturates the tanh layer: finite


@pytest.mark.parametrize("entry", ENTRY_X)
@pytest.mark.parametrize("case", sorted(X_BAD))
def test_bad_x_is_refused_naming_it(entry, case):
    model = make_model()
    assert_rejected(lambda: _call(model, entry, X_BAD[case]()), model, "x")


def test_one_sample_and_one_feature_work():
    model = make_model()
    np.testing.assert_allclose(model.predict(X[:1]), model.predict(X)[:1], rtol=1e-6)
    assert model.predict_classes(X[:1]).shape == (1,)
    # fit on a single sample, every fit path
    for bs in (1, 4, None):
        m = make_model(optimizer="sgd")
        m.fit(X[:1], LABELS[:1], epochs=2, batch_size=bs, verbose=0)
        assert np.all(np.isfinite(m.params))
    # a model of one input feature and one output
    from fastnn import Dense, Sequential
    m = Sequential([Dense(1, input_dim=1)], seed=0)
    m.compile(optimizer="sgd", loss="mse")
    m.fit(X[:, :1], X[:, 1], epochs=3, verbose=0)
    assert m.predict(X[:, :1]).shape == (N, 1)
    assert np.all(np.isfinite(m.params))


def test_fit_without_input_dim_rejects_before_building():
    from fastnn import Dense, Sequential
    m = Sequential([Dense(3)], seed=0)
    m.compile()
    for bad in (X_BAD["nan"](), X_BAD["1d"](), X_BAD["empty_rows"](), X_BAD["strings"]()):
        with pytest.raises((ValueError, TypeError), match="x"):
            m.fit(bad, LABELS, verbose=0)
        assert not m.built


# --------------------------------------------------------------------------- y cases

# label losses: (loss, n_outputs) -> y cases
Y_LABEL_SAME = {
    "float_integral": lambda: LABELS.astype(np.float64),
    "float32_integral": lambda: LABELS.astype(np.float32),
    "float16": lambda: LABELS.astype(np.float16),
    "int8": lambda: LABELS.astype(np.int8),
    "uint64": lambda: LABELS.astype(np.uint64),
    "column": lambda: LABELS[:, None],
    "list": lambda: LABELS.tolist(),
    "torch": lambda: torch.from_numpy(LABELS.copy()),
    "readonly": lambda: _readonly(LABELS),
    "noncontiguous": lambda: np.repeat(LABELS, 2)[::2],
    "bool_as_0_1": lambda: (LABELS > 0),
}

Y_LABEL_BAD = {
    "out_of_range": lambda: np.where(LABELS == 2, CLASSES, LABELS),
    "far_out_of_range": lambda: np.full(N, 10 ** 9),
    "int64_max": lambda: np.full(N, np.iinfo(np.int64).max),
    "uint64_max": lambda: np.full(N, np.iinfo(np.uint64).max, np.uint64),
    "negative": lambda: np.where(LABELS == 2, -1, LABELS),
    "int64_min": lambda: np.full(N, np.iinfo(np.int64).min),
    "int8_negative": lambda: np.full(N, -128, np.int8),
    "float_fraction": lambda: LABELS + 0.5,
    "float_1e30": lambda: np.full(N, 1e30),
    "float_-1e30": lambda: np.full(N, -1e30),
    "nan": lambda: np.where(LABELS == 2, np.nan, LABELS),
    "inf": lambda: np.where(LABELS == 2, np.inf, LABELS),
    "strings": lambda: LABELS.astype(str),
    "object": lambda: LABELS.astype(object),
    "none": lambda: None,
    "too_short": lambda: LABELS[:-1],
    "too_long": lambda: np.append(LABELS, 0),
    "empty": lambda: np.zeros(0, np.int64),
    "2d_wide": lambda: np.eye(CLASSES)[LABELS],
    "3d": lambda: LABELS[:, None, None],
    "scalar": lambda: 1,
    "ragged": lambda: [[0], [1, 2]] + [[0]] * (N - 2),
    "complex": lambda: LABELS.astype(np.complex128),
    "torch_requires_grad": lambda: torch.tensor(LABELS, dtype=torch.float32, requires_grad=True),
}

LABEL_LOSSES = ["softmax_cross_entropy", "hinge", "perceptron"]


@pytest.mark.parametrize("entry", ["fit", "evaluate"])
@pytest.mark.parametrize("loss", LABEL_LOSSES)
@pytest.mark.parametrize("case", sorted(Y_LABEL_SAME))
def test_labels_in_another_form_give_the_same_result(entry, loss, case):
    if loss != "softmax_cross_entropy" and case == "column":
        pytest.skip("for hinge and perceptron a column (N, 1) is binary targets, not labels")
    y = Y_LABEL_SAME[case]()
    clean = np.asarray(LABELS > 0, np.int64) if case == "bool_as_0_1" else LABELS
    _same(_call(make_model(loss), entry, X, y), _call(make_model(loss), entry, X, clean))


@pytest.mark.parametrize("entry", ["fit", "evaluate"])
@pytest.mark.parametrize("loss", LABEL_LOSSES)
@pytest.mark.parametrize("case", sorted(Y_LABEL_BAD))
def test_bad_labels_are_refused_naming_y(entry, loss, case):
    if loss != "softmax_cross_entropy" and case == "2d_wide":
        pytest.skip("for hinge and perceptron (N, K) in {-1, 0, 1} are valid per-output targets")
    model = make_model(loss)
    assert_rejected(lambda: _call(model, entry, X, Y_LABEL_BAD[case]()), model, "y")


# real-valued targets: loss -> bad y
Y_TARGET_BAD = {
    "binary_cross_entropy": {
        "above_1": lambda: np.full((N, CLASSES), 2.0), "negative": lambda: np.full(
            (N, CLASSES), -0.5), "nan": lambda: np.full((N, CLASSES), np.nan),
        "wrong_width": lambda: np.zeros((N, CLASSES + 1)), "too_short": lambda: np.zeros(
            (N - 1, CLASSES)), "strings": lambda: np.full((N, CLASSES), "1"),
        "1e30": lambda: np.full((N, CLASSES), 1e30)},
    "mse": {
        "inf": lambda: np.full((N, CLASSES), np.inf), "-inf": lambda: np.full(
            (N, CLASSES), -np.inf), "wrong_width": lambda: np.zeros((N, 1)),
        "1d": lambda: np.zeros(N), "too_long": lambda: np.zeros((N + 1, CLASSES)),
        "object": lambda: np.zeros((N, CLASSES), object), "empty": lambda: np.zeros((0, CLASSES)),
        "1e300_into_float32": lambda: np.full((N, CLASSES), 1e300)},
    "kl_divergence": {
        "negative": lambda: np.full((N, CLASSES), -0.1), "nan": lambda: np.full(
            (N, CLASSES), np.nan), "labels_not_distributions": lambda: LABELS},
    "hinge": {"binary_2": lambda: np.full((N, CLASSES), 2.0)},
}
Y_TARGET_CASES = [(loss, case) for loss, cases in Y_TARGET_BAD.items() for case in cases]


@pytest.mark.parametrize("entry", ["fit", "evaluate"])
@pytest.mark.parametrize("loss,case", Y_TARGET_CASES)
def test_bad_targets_are_refused_naming_y(entry, loss, case):
    model = make_model(loss)
    y = Y_TARGET_BAD[loss][case]()
    assert_rejected(lambda: _call(model, entry, X, y), model, "y")


# --------------------------------------------------------------------------- sample_weight

SW_BAD = {
    "negative": lambda: -np.ones(N), "nan": lambda: np.full(N, np.nan),
    "inf": lambda: np.full(N, np.inf), "too_short": lambda: np.ones(N - 1),
    "2d": lambda: np.ones((N, 1)), "strings": lambda: np.ones(N).astype(str),
    "object": lambda: np.ones(N, object), "ragged": lambda: [[1.0], [1.0, 2.0]],
    "scalar": lambda: 1.0,
}


@pytest.mark.parametrize("entry", ["fit", "evaluate"])
@pytest.mark.parametrize("case", sorted(SW_BAD))
def test_bad_sample_weight_is_refused_naming_it(entry, case):
    model = make_model()
    sw = SW_BAD[case]()
    if entry == "fit":
        call = lambda: model.fit(X, LABELS, sample_weight=sw, verbose=0)  # noqa: E731
    else:
        call = lambda: model.evaluate(X, LABELS, sample_weight=sw)  # noqa: E731
    assert_rejected(call, model, "sample_weight")


@pytest.mark.parametrize("form", ["int", "bool_ones", "list", "readonly", "float16"])
def test_sample_weight_in_another_form(form):
    sw = {"int": np.ones(N, np.int64), "bool_ones": np.ones(N, bool),
          "list": [1.0] * N, "readonly": _readonly(np.ones(N)),
          "float16": np.ones(N, np.float16)}[form]
    a, b = make_model(), make_model()
    a.fit(X, LABELS, sample_weight=sw, epochs=2, verbose=0)
    b.fit(X, LABELS, sample_weight=np.ones(N), epochs=2, verbose=0)
    assert a.params.tobytes() == b.params.tobytes()


# --------------------------------------------------------------------------- fit's other inputs

FIT_KWARGS_BAD = {
    "validation_data_nan": ({"validation_data": (X_BAD["nan"](), LABELS)}, "validation_data"),
    "validation_data_label_oob": ({"validation_data": (X, np.full(N, CLASSES))},
                                  "validation_data"),
    "validation_data_short": ({"validation_data": (X, LABELS[:-1])}, "validation_data"),
    "validation_data_not_tuple": ({"validation_data": X}, "validation_data"),
    "class_weight_oob": ({"class_weight": {CLASSES: 2.0}}, "class_weight"),
    "class_weight_negative": ({"class_weight": {0: -1.0}}, "class_weight"),
    "class_weight_nan": ({"class_weight": {0: float("nan")}}, "class_weight"),
    "class_weight_list": ({"class_weight": [1.0, 2.0, 3.0]}, "class_weight"),
    "validation_split_1": ({"validation_split": 1.0}, "validation_split"),
    "validation_split_nan": ({"validation_split": float("nan")}, "validation_split"),
    "epochs_negative": ({"epochs": -1}, "epochs"),
    "epochs_float": ({"epochs": 1.5}, "epochs"),
    "batch_size_0": ({"batch_size": 0}, "batch_size"),
    "batch_size_bool": ({"batch_size": True}, "batch_size"),
    "tol_nan": ({"tol": float("nan")}, "tol"),
}


@pytest.mark.parametrize("case", sorted(FIT_KWARGS_BAD))
def test_bad_fit_arguments_are_refused_naming_them(case):
    kwargs, name = FIT_KWARGS_BAD[case]
    model = make_model()
    assert_rejected(lambda: model.fit(X, LABELS, verbose=0, **kwargs), model, name)


def test_mismatched_lengths_name_both():
    model = make_model()
    err = assert_rejected(lambda: model.fit(X, LABELS[:-2], verbose=0), model, "x")
    assert "y" in str(err) and "6" in str(err) and "8" in str(err)


def test_failed_fit_then_successful_fit_equals_a_clean_fit():
    """A rejected call leaves nothing behind that changes the next fit (workspaces, rng)."""
    a, b = make_model(), make_model()
    for case in ("nan", "1d", "strings", "ragged_list"):
        with pytest.raises((ValueError, TypeError)):
            a.fit(X_BAD[case](), LABELS, verbose=0)
    with pytest.raises(ValueError):
        a.fit(X, Y_LABEL_BAD["out_of_range"](), verbose=0)
    a.fit(X, LABELS, epochs=2, verbose=0)
    b.fit(X, LABELS, epochs=2, verbose=0)
    assert a.params.tobytes() == b.params.tobytes()


def test_predict_does_not_change_the_model():
    model = make_model()
    snap = snapshot(model)
    for entry in ("predict", "predict_proba", "predict_classes", "evaluate"):
        _call(model, entry, X)
    assert_unchanged(model, snap)


def test_every_loss_through_every_entry_point_with_its_default_targets():
    """Smoke over the whole loss table: finite outputs, probabilities in [0, 1]."""
    from fastnn import losses
    for loss in losses.LOSSES:
        model = make_model(loss)
        y = default_targets(loss)
        logs = model.evaluate(X, y)
        assert np.isfinite(logs["loss"])
        assert np.all(np.isfinite(model.predict(X)))
        if model.loss.probabilistic:
            p = model.predict_proba(X)
            assert np.all((p >= 0) & (p <= 1))
        assert model.predict_classes(X).shape[0] == N
    assert FEATURES == X.shape[1]
