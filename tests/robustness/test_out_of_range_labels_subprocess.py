"""Labels past the model's classes, negative labels and mismatched shapes through every entry
point that takes labels, each in a child interpreter: the kernels index with labels unchecked,
so a label that slipped past validation would read or write out of bounds, and a segfault must
fail one test rather than kill the run. The child prints OK only after every case was refused
with an error naming the argument and the model was bitwise unchanged."""
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

PRELUDE = """
import numpy as np
import fastnn
from fastnn import Dense, Sequential, losses
from helpers_robustness import X, LABELS, N, CLASSES, snapshot, assert_unchanged

BAD_LABELS = [np.where(LABELS == 2, CLASSES, LABELS), np.full(N, 10 ** 9),
              np.full(N, np.iinfo(np.int64).max), np.full(N, np.iinfo(np.uint64).max, np.uint64),
              np.where(LABELS == 2, -1, LABELS), np.full(N, np.iinfo(np.int64).min),
              np.full(N, -1, np.int8), np.full(N, 3.0), np.full(N, -1.0), np.full(N, 1e30),
              np.full(N, 2 ** 63, np.float64), LABELS[:-1], np.append(LABELS, 2 ** 40)]

def model(loss="softmax_cross_entropy", optimizer="adam", n_out=CLASSES):
    m = Sequential([Dense(5, activation="relu", input_dim=4), Dense(n_out)], seed=3)
    m.compile(optimizer=optimizer, loss=loss)
    m.fit(X, LABELS, epochs=1, batch_size=4, verbose=0)
    return m

def refused(call, m, name="y"):
    snap = snapshot(m)
    try:
        call()
    except (ValueError, TypeError) as e:
        assert name in str(e), f"message does not name {name}: {e}"
    else:
        raise AssertionError("not refused")
    assert_unchanged(m, snap)
"""

CASES = {
    "fit_fused_sgd_batch1": """
        m = model(optimizer="sgd")
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, batch_size=1, verbose=0), m)
    """,
    "fit_minibatch": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, batch_size=3, verbose=0), m)
    """,
    "fit_full_batch_with_tol": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, batch_size=None, tol=1e-3, verbose=0), m)
    """,
    "fit_multiclass_hinge_and_perceptron": """
        for loss in ("hinge", "perceptron"):
            m = model(loss)
            for y in BAD_LABELS:
                refused(lambda: m.fit(X, y, verbose=0), m)
    """,
    "fit_label_smoothing": """
        m = model(losses.SoftmaxCrossEntropy(label_smoothing=0.1))
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, verbose=0), m)
    """,
    "fit_class_weight": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, class_weight={0: 2.0}, verbose=0), m)
        refused(lambda: m.fit(X, LABELS, class_weight={CLASSES: 2.0}, verbose=0), m,
                "class_weight")
        refused(lambda: m.fit(X, LABELS, class_weight={-1: 2.0}, verbose=0), m, "class_weight")
    """,
    "fit_validation_data": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, LABELS, validation_data=(X, y), verbose=0), m,
                    "validation_data")
    """,
    "fit_validation_split": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.fit(X, y, validation_split=0.25, verbose=0), m)
    """,
    "evaluate": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: m.evaluate(X, y), m)
        for loss in ("hinge", "perceptron"):
            m = model(loss)
            for y in BAD_LABELS:
                refused(lambda: m.evaluate(X, y), m)
    """,
    "gradcheck": """
        m = model()
        for y in BAD_LABELS:
            refused(lambda: fastnn.gradcheck(m, X, y), m)
    """,
    "loss_prepare": """
        for cls in (losses.SoftmaxCrossEntropy, losses.Hinge, losses.Perceptron):
            for y in [b for b in BAD_LABELS if len(b) == N]:  # prepare sees no x to match
                try:
                    cls().prepare(y, CLASSES, np.float32)
                except ValueError as e:
                    assert "y" in str(e), e
                else:
                    raise AssertionError(f"{cls.__name__} took {y}")
    """,
    "loss_kernel_call_mismatched_with_prepare": """
        # labels valid for 10 classes reach a kernel over 2-column logits; a short y meets
        # many rows; targets of the wrong shape; a wrong-shaped dz: all refused, no kernel runs
        sw = np.zeros(0, np.float32)
        y, k = losses.SoftmaxCrossEntropy().prepare(np.array([0, 9, 9]), 10, np.float32)
        z = np.zeros((3, 2), np.float32)
        calls = [lambda: k(np.empty_like(z), z, y, sw),
                 lambda: k(np.empty((5000, 10), np.float32), np.zeros((5000, 10), np.float32),
                           y, sw),
                 lambda: k(np.empty((1, 1), np.float32), np.zeros((3, 10), np.float32), y, sw),
                 lambda: k(np.empty((3, 10), np.float32), np.zeros((3, 10), np.float32), y,
                           np.ones(2, np.float32)),
                 lambda: k(np.empty((3, 10)), np.zeros((3, 10)), y.astype(np.int32), np.zeros(0)),
                 lambda: k(np.empty((3, 10)), np.zeros((3, 10)), [0, 1, 2], np.zeros(0))]
        t, kb = losses.MSE().prepare(np.zeros((3, 2)), 2, np.float64)
        calls += [lambda: kb(np.empty((9, 2)), np.zeros((9, 2)), t, np.zeros(0)),
                  lambda: kb(np.empty((3, 5)), np.zeros((3, 5)), t, np.zeros(0)),
                  lambda: kb(np.empty((3, 2), np.float32), np.zeros((3, 2), np.float32), t,
                             np.zeros(0, np.float32))]
        for i, call in enumerate(calls):
            try:
                call()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError(f"call {i} was not refused")
        # the well-formed call still works and matches the reference
        from fastnn.kernels import reference
        y, k = losses.SoftmaxCrossEntropy().prepare(np.array([0, 1, 1]), 2, np.float64)
        z = np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 0.0]])
        dz, dz_ref = np.empty_like(z), np.empty_like(z)
        got = k(dz, z, y, np.zeros(0))
        want = reference.softmax_cross_entropy(dz_ref, z, y, np.zeros(0), 0.0, True)
        assert np.isclose(got, want) and np.allclose(dz, dz_ref)
    """,
    "estimators_take_any_label_values": """
        # an estimator maps labels to classes_ itself: huge, negative and string labels are
        # classes like any other, and predict returns only those
        import warnings
        from fastnn import linear_model as lm, multiclass as mc, neural_network as nn
        warnings.simplefilter("ignore")
        Xd = X.astype(np.float64)
        for y in (np.array([-5, 10 ** 12, 7, -5, 10 ** 12, 7, -5, 7]),
                  np.array([2 ** 62, -(2 ** 62)] * 4), np.array(["a", "b", "c", "a"] * 2)):
            for est in (lm.LogisticRegression(max_iter=5), lm.SoftmaxRegression(max_iter=5),
                        lm.Perceptron(max_iter=3), lm.LinearSVM(max_iter=5),
                        mc.OneVsRestClassifier(lm.LogisticRegression(max_iter=5)),
                        mc.OneVsOneClassifier(lm.LogisticRegression(max_iter=5)),
                        nn.MLPClassifier((3,), max_iter=5)):
                pred = est.fit(Xd, y).predict(Xd)
                assert set(pred.tolist()) <= set(y.tolist()), (type(est).__name__, pred)
        # fractional labels are scikit-learn's "continuous" target: refused, naming the type
        try:
            lm.LogisticRegression().fit(Xd, np.array([0.5, 1.5] * 4))
        except ValueError as e:
            assert "label type" in str(e), e
        else:
            raise AssertionError("continuous labels were taken")
    """,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_range_labels_in_a_child_process(case):
    code = PRELUDE + textwrap.dedent(CASES[case]) + "\nprint('OK')\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, (
        f"child exited with {proc.returncode}"
        + (f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else "")
        + f"\n{proc.stdout}\n{proc.stderr}")
    assert proc.stdout.strip().endswith("OK")
