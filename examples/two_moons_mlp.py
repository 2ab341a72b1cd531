"""Seed 001's two moons, learned by a small MLP with fastnn's Keras-like API; prints the
per-epoch progress and the test accuracy, and draws the decision regions and the training
curves to PNGs (fastnn.plot; needs matplotlib: pip install 'fastnn-numba[plot]').

    python examples/two_moons_mlp.py [--out two_moons]
"""
import argparse
import pathlib

import fastnn as fn
from fastnn.datasets import make_moons, train_test_split
from fastnn.plot import plot_decision_boundary, plot_history


def main(out="two_moons"):
    """Train, evaluate, and write <out>/decision_regions.png and <out>/history.png;
    returns the test accuracy."""
    x, y = make_moons(n_samples=600, noise=0.15, seed=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.25, seed=0)
    model = fn.Sequential([fn.Dense(32, activation="tanh"), fn.Dense(32, activation="tanh"),
                           fn.Dense(2)], seed=0)
    model.compile(optimizer=fn.optim.SGD(lr=0.1, momentum=0.9), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=30, batch_size=16,
                        validation_data=(x_test, y_test),
                        callbacks=[fn.callbacks.EarlyStopping(patience=5,
                                                              restore_best_weights=True)],
                        verbose=1)
    acc = model.evaluate(x_test, y_test)["accuracy"]
    print(f"test accuracy {acc:.3f}")

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_decision_boundary(model, x, y, path=out / "decision_regions.png")
    plot_history(history, path=out / "history.png")
    print(f"wrote {out / 'decision_regions.png'} and {out / 'history.png'}")
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="two_moons", help="folder for the PNGs")
    main(parser.parse_args().out)
