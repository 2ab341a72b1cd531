"""Bad input is rejected once, at the public boundary, with a ValueError or TypeError naming
the argument, and a rejected call leaves the model exactly as it was."""
import numpy as np
import pytest

import fastnn as fn

RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 4))
Y = RNG.integers(0, 3, 20)


def _model(built=True, loss="softmax_cross_entropy", k=3):
    model = fn.Sequential([fn.Dense(5, activation="relu", input_dim=4 if built else None),
                           fn.Dense(k)], seed=0)
    model.compile(optimizer=fn.optim.SGD(lr=0.1, momentum=0.9), loss=loss,
                  metrics=[] if loss == "mse" else ["accuracy"])
    return model


def _with(a, idx, value):
    a = a.astype(float).copy()
    a[idx] = value
    return a


FIT_CASES = {
    "x 1-D": (dict(x=X[:, 0]), ValueError, "x must be 2-D"),
    "x 3-D": (dict(x=X[:, :, None]), ValueError, "x must be 2-D"),
    "x wrong width": (dict(x=X[:, :3]), ValueError, "x has 3 features but the model expects 4"),
    "x empty": (dict(x=X[:0], y=Y[:0]), ValueError, "x is empty"),
    "x NaN": (dict(x=_with(X, (3, 1), np.nan)), ValueError, "x contains NaN"),
    "x inf": (dict(x=_with(X, (0, 0), np.inf)), ValueError, "x contains NaN or infinite"),
    "x strings": (dict(x=X.astype(str)), TypeError, "x must hold numbers"),
    "x object": (dict(x=X.astype(object)), TypeError, "x must hold numbers"),
    "lengths differ": (dict(y=Y[:-1]), ValueError, "x and y have different lengths: 20 and 19"),
    "label out of range": (dict(y=_with(Y, 4, 12).astype(int)), ValueError,
                           "y contains label 12 but the model has 3 outputs"),
    "negative label": (dict(y=_with(Y, 4, -1).astype(int)), ValueError, "y contains negative label -1"),
    "non-integer label": (dict(y=_with(Y, 2, 1.5)), ValueError, "non-integer value 1.5"),
    "label NaN": (dict(y=_with(Y, 2, np.nan)), ValueError, "y contains NaN"),
    "y 2-D for labels": (dict(y=np.eye(3)[Y]), ValueError, r"y must be integer class labels of shape"),
    "y strings": (dict(y=Y.astype(str)), TypeError, "y must hold numbers"),
    "sample_weight shape": (dict(sample_weight=np.ones(19)), ValueError, r"sample_weight must have shape \(20,\)"),
    "sample_weight negative": (dict(sample_weight=-np.ones(20)), ValueError, "sample_weight must be finite and >= 0"),
    "epochs": (dict(epochs=-1), ValueError, "epochs"),
    "batch_size": (dict(batch_size=0), ValueError, "batch_size"),
    "validation_split": (dict(validation_split=1.5), ValueError, "validation_split"),
    "bad validation labels": (dict(validation_data=(X, _with(Y, 0, 9).astype(int))), ValueError,
                              r"validation_data\[1\] contains label 9"),
    "validation width": (dict(validation_data=(X[:, :2], Y)), ValueError, r"validation_data\[0\]"),
    "validation_data type": (dict(validation_data=X), TypeError, "validation_data must be a tuple"),
    "callback type": (dict(callbacks=[print]), TypeError, r"callbacks\[0\]"),
}


# an unbuilt model infers its width from x, so "wrong width" applies to built models only
@pytest.mark.parametrize("case, built", [(c, b) for c in FIT_CASES for b in (True, False)
                                         if b or c != "x wrong width"])
def test_fit_rejects_bad_input_and_leaves_model_unchanged(case, built):
    kwargs, error, message = FIT_CASES[case]
    model = _model(built)
    before = None if not built else model.params.copy()
    args = dict(x=X, y=Y, epochs=2, verbose=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        model.fit(**args)
    if built:
        np.testing.assert_array_equal(model.params, before)
        assert not model.optimizer.velocity.any()  # no step was taken
    else:
        assert not model.built


@pytest.mark.parametrize("loss, y, message", [
    ("binary_cross_entropy", np.full((20, 1), 2.0), r"targets in \[0, 1\]"),
    ("mse", np.ones((20, 2)), r"y must have shape \(n_samples, 1\)"),
    ("hinge", np.full(20, 0.5), r"binary targets in \[-1, 0, 1\]"),
    ("kl_divergence", -np.ones((20, 1)), "negative entries"),
])
def test_loss_specific_targets_are_checked(loss, y, message):
    model = _model(loss=loss, k=1)
    before = model.params.copy()
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, verbose=0)
    np.testing.assert_array_equal(model.params, before)


def test_evaluate_and_predict_validate_too():
    model = _model()
    with pytest.raises(ValueError, match="y contains label 3 but the model has 3 outputs"):
        model.evaluate(X, np.full(20, 3))
    with pytest.raises(ValueError, match="x has 5 features"):
        model.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="x contains NaN"):
        model.predict_classes(np.full((2, 4), np.nan))
    with pytest.raises(RuntimeError, match="not built"):
        _model(built=False).predict(X)


@pytest.mark.parametrize("make, error, message", [
    (lambda: fn.Dense(3, activation="swish"), ValueError, "unknown activation 'swish'; valid: .*relu"),
    (lambda: fn.Dense(3, kernel_initializer="orthogonal"), ValueError, "unknown kernel_initializer.*he_normal"),
    (lambda: fn.Dense(0), ValueError, "units"),
    (lambda: fn.Dense(2.5), TypeError, "units"),
    (lambda: fn.Dense(3, kernel_regularizer="l3"), TypeError, "kernel_regularizer"),
    (lambda: fn.Sequential([]).compile(), ValueError, "no Dense layer"),
    (lambda: fn.Sequential([fn.Dense(2), "relu"]), TypeError, r"layers\[1\]"),
    (lambda: fn.Sequential([fn.Dense(2)], dtype="int32"), ValueError, "dtype"),
    (lambda: fn.optim.SGD(lr=-1), ValueError, "lr"),
    (lambda: fn.optim.SGD(momentum=2), ValueError, "momentum"),
    (lambda: fn.optim.SGD(learning_rate=0), ValueError, "learning_rate"),
    (lambda: _model().compile(optimizer="nadam"), ValueError, "unknown optimizer 'nadam'; valid: adagrad, adam, adamw, rmsprop, sgd"),
    (lambda: _model().compile(loss="huber"), ValueError, "unknown loss 'huber'; valid: .*mse"),
    (lambda: fn.Dense(3, bias_initializer="twos"), ValueError, "unknown bias_initializer"),
    (lambda: fn.Dense(3, name=""), TypeError, "name must be a non-empty str"),
    (lambda: fn.Dense(3, input_shape=(0,)), ValueError, r"input_shape\[0\]"),
    (lambda: fn.Dense(3, activation="softmax2"), ValueError, "unknown activation.*softmax"),
    (lambda: fn.Dropout(-0.1), ValueError, "rate"),
    (lambda: fn.Dropout("0.5"), ValueError, "rate"),
    (lambda: fn.optim.RMSprop(rho=1.0), ValueError, "rho"),
    (lambda: fn.optim.RMSprop(epsilon=0), ValueError, "epsilon"),
    (lambda: fn.optim.Adagrad(initial_accumulator_value=-1), ValueError,
     "initial_accumulator_value"),
    (lambda: fn.optim.Adagrad(lr_decay=-1), ValueError, "lr_decay"),
    (lambda: fn.optim.Adam(beta1=0.9, beta_1=0.8), ValueError, "same argument"),
    (lambda: _model().fit(np.ones((4, 3)), np.zeros(4), initial_epoch=-1), ValueError,
     "initial_epoch"),
    (lambda: _model().get_layer(index=7), ValueError, "index"),
    (lambda: _model().compile(metrics=["f1"]), ValueError, "unknown metric 'f1'"),
    (lambda: _model().compile(loss="mse", metrics=["accuracy"]), ValueError, "accuracy"),
])
def test_constructors_and_compile_name_the_bad_argument(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_training_through_sign_activation_is_refused():
    model = fn.Sequential([fn.Dense(3, activation="sign", input_dim=4), fn.Dense(3)])
    model.compile(loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match="'sign'"):
        model.fit(X, Y, verbose=0)


def test_fit_before_compile_is_refused():
    model = fn.Sequential([fn.Dense(3)])
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(X, Y, verbose=0)


# ---- masked arrays and all-zero weights (issue 12)

def _masked(a):
    return np.ma.masked_array(a, mask=np.zeros(np.shape(a), bool))  # even an empty mask


@pytest.mark.parametrize("arg, loss", [("x", "softmax_cross_entropy"),
                                       ("y", "softmax_cross_entropy"), ("y", "mse"),
                                       ("sample_weight", "softmax_cross_entropy")])
def test_masked_arrays_are_refused_by_name(arg, loss):
    """The mask would not be honoured (the kernels read the data under it), so fastnn refuses
    masked arrays, whatever the mask holds."""
    model = _model(loss=loss, k=1 if loss == "mse" else 3)
    before = model.params.copy()
    args = dict(x=X, y=Y if loss != "mse" else Y[:, None].astype(float),
                sample_weight=np.ones(20))
    args[arg] = _masked(args[arg])
    with pytest.raises(TypeError, match=f"{arg} is a masked array"):
        model.fit(epochs=1, verbose=0, **args)
    np.testing.assert_array_equal(model.params, before)
    with pytest.raises(TypeError, match="x is a masked array"):
        model.predict(_masked(X))


def test_validation_functions_refuse_masked_arrays_and_zero_weights():
    from fastnn import validation as v
    for call in (lambda: v.check_x(_masked(X)), lambda: v.check_labels(_masked(Y), 3),
                 lambda: v.check_targets(_masked(X[:, :1]), 1, np.float64),
                 lambda: v.check_sample_weight(_masked(np.ones(20)), 20, np.float64)):
        with pytest.raises(TypeError, match="masked array"):
            call()
    with pytest.raises(ValueError, match="sample_weight is 0 for every sample"):
        v.check_sample_weight(np.zeros(20), 20, np.float64)
    assert v.check_sample_weight(np.eye(20)[3], 20, np.float64)[3] == 1.0  # one is enough


def test_all_zero_sample_weight_is_refused_by_fit():
    model = _model()
    before = model.params.copy()
    with pytest.raises(ValueError, match="sample_weight is 0 for every sample"):
        model.fit(X, Y, sample_weight=np.zeros(20), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[2\] is 0 for every sample"):
        model.fit(X, Y, validation_data=(X, Y, np.zeros(20)), verbose=0)
    np.testing.assert_array_equal(model.params, before)
