"""Seeded toy data sets from the course notes, and scikit-learn's bundled digits.

Every generator takes `seed` and returns float64 features X of shape (n_samples, n_features)
and targets y: int64 class labels for classification, float64 values for regression. The same
seed gives the same arrays on every machine (numpy's PCG64 via default_rng)."""
import numpy as np


def _check_count(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_noise(noise):
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    return noise


def _split_counts(n_samples, n_classes):
    """Class sizes that differ by at most one and add up to n_samples."""
    return [n_samples // n_classes + (c < n_samples % n_classes) for c in range(n_classes)]


def _shuffled(x, y, rng):
    order = rng.permutation(len(y))
    return x[order], y[order]


def make_moons(n_samples=200, noise=0.1, seed=0):
    """Two interleaving half circles (seed 001's "two-moons"), classes 0 and 1.
    Class 0: (cos t, sin t); class 1: (1 - cos t, 0.5 - sin t), t uniform on [0, pi]; plus
    Gaussian noise of standard deviation `noise`."""
    n_samples, noise = _check_count("n_samples", n_samples, 2), _check_noise(noise)
    rng = np.random.default_rng(seed)
    n0, n1 = _split_counts(n_samples, 2)
    t0, t1 = rng.uniform(0, np.pi, n0), rng.uniform(0, np.pi, n1)
    x = np.concatenate([np.c_[np.cos(t0), np.sin(t0)], np.c_[1 - np.cos(t1), 0.5 - np.sin(t1)]])
    x += noise * rng.standard_normal(x.shape)
    y = np.r_[np.zeros(n0, np.int64), np.ones(n1, np.int64)]
    return _shuffled(x, y, rng)


def make_xor(n_samples=200, noise=0.1, seed=0):
    """XOR: points near the four corners of [-1, 1]^2; label 1 where the signs differ."""
    n_samples, noise = _check_count("n_samples", n_samples), _check_noise(noise)
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 4, n_samples)
    signs = np.c_[np.where(corners & 1, 1.0, -1.0), np.where(corners & 2, 1.0, -1.0)]
    x = signs + noise * rng.standard_normal((n_samples, 2))
    y = (signs[:, 0] != signs[:, 1]).astype(np.int64)
    return x, y


def make_spirals(n_samples=300, n_classes=3, noise=0.2, seed=0):
    """Interleaved spiral arms, one per class (the cs231n toy problem): arm c has radius r in
    [0, 1] and angle 4 r + 2 pi c / n_classes, with Gaussian noise of `noise` on the angle."""
    n_samples, noise = _check_count("n_samples", n_samples), _check_noise(noise)
    n_classes = _check_count("n_classes", n_classes, 2)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, n in enumerate(_split_counts(n_samples, n_classes)):
        r = np.linspace(0.0, 1.0, n)
        theta = 4 * r + 2 * np.pi * c / n_classes + noise * rng.standard_normal(n)
        xs.append(np.c_[r * np.sin(theta), r * np.cos(theta)])
        ys.append(np.full(n, c, np.int64))
    return _shuffled(np.concatenate(xs), np.concatenate(ys), rng)


def make_blobs(n_samples=300, n_features=2, n_classes=3, spread=1.0, separation=4.0, seed=0):
    """Isotropic Gaussian classes: centres drawn from N(0, separation^2 I), points from
    N(centre, spread^2 I)."""
    n_samples = _check_count("n_samples", n_samples)
    n_features = _check_count("n_features", n_features)
    n_classes = _check_count("n_classes", n_classes)
    spread = _check_noise(spread)
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((n_classes, n_features))
    y = np.concatenate([np.full(n, c, np.int64)
                        for c, n in enumerate(_split_counts(n_samples, n_classes))])
    x = centres[y] + spread * rng.standard_normal((n_samples, n_features))
    return _shuffled(x, y, rng)


def make_regression(n_samples=200, n_features=5, noise=0.1, bias=0.0, seed=0, return_coef=False):
    """Noisy linear-regression data: y = X w + bias + noise * e with X, w, e standard normal.
    With return_coef=True also returns the true w, to check a fit against."""
    n_samples = _check_count("n_samples", n_samples)
    n_features = _check_count("n_features", n_features)
    noise = _check_noise(noise)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    coef = rng.standard_normal(n_features)
    y = x @ coef + float(bias) + noise * rng.standard_normal(n_samples)
    return (x, y, coef) if return_coef else (x, y)


def load_digits():
    """scikit-learn's bundled 8x8 handwritten digits: X (1797, 64) with pixel values 0..16 as
    float64, y (1797,) int64 in 0..9. Needs scikit-learn, which ships the data (no download)."""
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "fastnn.datasets.load_digits wraps scikit-learn's bundled digits data; install it "
            "with `pip install scikit-learn` (or fastnn's test extra: pip install "
            "'fastnn-numba[test]')") from exc
    data = _sk_load_digits()
    return data.data.astype(np.float64), data.target.astype(np.int64)


def train_test_split(x, y, test_fraction=0.25, seed=0):
    """A seeded shuffle split: (x_train, x_test, y_train, y_test), sklearn's order."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(len(x) * test_fraction))
    if n_test < 1 or n_test >= len(x):
        raise ValueError(f"test_fraction {test_fraction} of {len(x)} samples leaves an empty "
                         "train or test set")
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return x[train], x[test], y[train], y[test]


# ---- concentric circles

def make_circles(n_samples=200, noise=0.05, factor=0.5, seed=0):
    """Two concentric circles, classes 0 (the outer, radius 1) and 1 (the inner, radius
    `factor`): the notes' example of data no line separates but one hidden layer does
    (scikit-learn's make_circles). Angles uniform on [0, 2 pi); plus Gaussian noise of
    standard deviation `noise`."""
    n_samples, noise = _check_count("n_samples", n_samples, 2), _check_noise(noise)
    factor = float(factor)
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be in (0, 1), the inner circle's radius, got {factor}")
    rng = np.random.default_rng(seed)
    n0, n1 = _split_counts(n_samples, 2)
    t0, t1 = rng.uniform(0, 2 * np.pi, n0), rng.uniform(0, 2 * np.pi, n1)
    x = np.concatenate([np.c_[np.cos(t0), np.sin(t0)], factor * np.c_[np.cos(t1), np.sin(t1)]])
    x += noise * rng.standard_normal(x.shape)
    y = np.r_[np.zeros(n0, np.int64), np.ones(n1, np.int64)]
    return _shuffled(x, y, rng)
