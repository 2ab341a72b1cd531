"""fastnn.plot renders to PNG files that are non-empty and change with the data; the missing
extra is named; datasets.make_circles, the data the decision boundary is drawn on here."""
import builtins
import sys

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

import fastnn as fn
from fastnn import plot
from fastnn.datasets import make_circles, make_moons

matplotlib.use("Agg")  # the test extra installs matplotlib; draw to files, never a window


def _pixels(path):
    """The PNG's pixels; asserts the file is a real, non-blank picture."""
    assert path.stat().st_size > 1000
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _fitted(x, y, seed=0):
    model = fn.Sequential([fn.Dense(8, activation="tanh"), fn.Dense(2)], seed=seed)
    model.compile(optimizer=fn.optim.Adam(lr=0.05), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=32, validation_data=(x[:20], y[:20]),
                        verbose=0)
    return model, history


def test_history_and_decision_boundary_render_and_follow_the_data(tmp_path):
    x, y = make_moons(120, noise=0.1, seed=0)
    model, history = _fitted(x, y)
    plot.plot_history(history, path=tmp_path / "history.png")
    first = _pixels(tmp_path / "history.png")
    plot.plot_history({"loss": [3.0, 1.0, 0.5], "val_loss": [3.0, 2.0, 1.9],
                       "accuracy": [0.1, 0.6, 0.9]}, path=tmp_path / "history2.png")
    assert not np.array_equal(first, _pixels(tmp_path / "history2.png"))

    plot.plot_decision_boundary(model, x, y, path=tmp_path / "moons.png")
    moons = _pixels(tmp_path / "moons.png")
    xc, yc = make_circles(120, noise=0.05, seed=0)
    circles_model, _ = _fitted(xc, yc)
    plot.plot_decision_boundary(circles_model, xc, yc, path=tmp_path / "circles.png")
    assert moons.shape == _pixels(tmp_path / "circles.png").shape
    assert not np.array_equal(moons, _pixels(tmp_path / "circles.png"))


def test_decision_boundary_takes_any_estimator(tmp_path):
    """Duck typing: a fastnn estimator, scikit-learn's, and a predict-only object."""
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from fastnn.linear_model import LogisticRegression

    x, y = make_moons(80, noise=0.1, seed=1)

    class Threshold:  # predict only: the sign of x1 + x2 - 0.5
        def predict(self, grid):
            return (grid.sum(axis=1) > 0.5).astype(np.int64)

    for i, est in enumerate([LogisticRegression().fit(x, y), SkLogistic().fit(x, y),
                             Threshold()]):
        path = tmp_path / f"estimator{i}.png"
        plot.plot_decision_boundary(est, x, y, path=path, resolution=60)
        _pixels(path)
    with pytest.raises(TypeError, match="predict"):
        plot.plot_decision_boundary(object(), x, y)
    with pytest.raises(ValueError, match="X has 3 features"):
        plot.plot_decision_boundary(Threshold(), np.zeros((4, 3)), np.zeros(4))


def test_kl_vs_l2_curve(tmp_path):
    plot.plot_kl_vs_l2(d=1, path=tmp_path / "d1.png")
    plot.plot_kl_vs_l2(d=0, path=tmp_path / "d0.png")
    assert not np.array_equal(_pixels(tmp_path / "d1.png"), _pixels(tmp_path / "d0.png"))
    with pytest.raises(ValueError, match="d must be 0 or 1"):
        plot.plot_kl_vs_l2(d=0.5)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for mod in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(ImportError, match=r"pip install 'fastnn-numba\[plot\]'"):
        plot.plot_kl_vs_l2()


def test_make_circles():
    """Two classes of equal size on radius 1 (class 0) and `factor` (class 1), seeded."""
    x, y = make_circles(101, noise=0.0, factor=0.3, seed=0)
    assert x.shape == (101, 2) and x.dtype == np.float64 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [51, 50]
    r = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-12)  # float64 cos/sin rounding
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-12)
    a, b = make_circles(50, seed=3), make_circles(50, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], make_circles(50, seed=4)[0])
    with pytest.raises(ValueError, match="factor"):
        make_circles(factor=1.5)
    with pytest.raises(ValueError, match="n_samples"):
        make_circles(1)
