"""fastnn.datasets: seeded, shaped as documented, and the problems are what they claim."""
import numpy as np
import pytest

from fastnn import datasets

GENERATORS = [datasets.make_moons, datasets.make_xor, datasets.make_spirals,
              datasets.make_blobs, datasets.make_regression]


@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_same_data_other_seed_other_data(make):
    a, b, c = make(n_samples=50, seed=1), make(n_samples=50, seed=1), make(n_samples=50, seed=2)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape[0] == 50 and a[1].shape == (50,)
    assert np.all(np.isfinite(a[0]))


@pytest.mark.parametrize("make", [datasets.make_moons, datasets.make_xor, datasets.make_spirals,
                                  datasets.make_blobs])
def test_classification_labels_are_balanced_int64(make):
    x, y = make(n_samples=61, seed=0)
    assert y.dtype == np.int64 and x.dtype == np.float64
    counts = np.bincount(y)
    if make is datasets.make_xor:  # corners drawn at random: balanced in expectation only
        assert counts.min() > 15
    else:
        assert counts.max() - counts.min() <= 1


def test_moons_without_noise_lie_on_the_two_arcs():
    x, y = datasets.make_moons(n_samples=100, noise=0.0, seed=0)
    upper = x[y == 0]
    lower = x[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0, rtol=1e-12)


def test_xor_labels_are_sign_disagreement_without_noise():
    x, y = datasets.make_xor(n_samples=80, noise=0.0, seed=0)
    assert np.array_equal(y, (np.sign(x[:, 0]) != np.sign(x[:, 1])).astype(np.int64))


def test_regression_recovers_its_coefficients():
    x, y, coef = datasets.make_regression(n_samples=500, n_features=4, noise=0.01, bias=2.0,
                                          seed=0, return_coef=True)
    fitted, *_ = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)
    # noise 0.01 over 500 samples: coefficient error ~ 0.01 / sqrt(500) ~ 5e-4
    np.testing.assert_allclose(fitted[:4], coef, atol=5e-3)
    np.testing.assert_allclose(fitted[4], 2.0, atol=5e-3)


def test_load_digits():
    x, y = datasets.load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.min() == 0 and x.max() == 16 and set(np.unique(y)) == set(range(10))


def test_train_test_split_partitions():
    x, y = datasets.make_blobs(n_samples=40, seed=0)
    xtr, xte, ytr, yte = datasets.train_test_split(x, y, test_fraction=0.25, seed=0)
    assert len(xte) == 10 and len(xtr) == 30
    rows = {tuple(r) for r in np.r_[xtr, xte]}
    assert rows == {tuple(r) for r in x}


@pytest.mark.parametrize("call,match", [
    (lambda: datasets.make_moons(n_samples=0), "n_samples"),
    (lambda: datasets.make_moons(n_samples=2.5), "n_samples"),
    (lambda: datasets.make_xor(noise=-1), "noise"),
    (lambda: datasets.make_spirals(n_classes=1), "n_classes"),
    (lambda: datasets.make_blobs(n_features=0), "n_features"),
    (lambda: datasets.train_test_split(np.zeros((3, 1)), np.zeros(2)), "same length"),
    (lambda: datasets.train_test_split(np.zeros((3, 1)), np.zeros(3), test_fraction=1.5),
     "test_fraction"),
])
def test_bad_arguments_are_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
