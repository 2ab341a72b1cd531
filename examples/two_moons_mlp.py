"""Seed 001's two moons, learned by a small MLP with fastnn's Keras-like API; prints the
per-epoch progress, the test accuracy, and an ASCII picture of the decision regions.

    python examples/two_moons_mlp.py
"""
import numpy as np

import fastnn as fn
from fastnn.datasets import make_moons, train_test_split


def main():
    x, y = make_moons(n_samples=600, noise=0.15, seed=0)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.25, seed=0)
    model = fn.Sequential([fn.Dense(32, activation="tanh"), fn.Dense(32, activation="tanh"),
                           fn.Dense(2)], seed=0)
    model.compile(optimizer=fn.optim.SGD(lr=0.1, momentum=0.9), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=30, batch_size=16, validation_data=(x_test, y_test),
              callbacks=[fn.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
              verbose=1)
    acc = model.evaluate(x_test, y_test)["accuracy"]
    print(f"test accuracy {acc:.3f}")

    # the decision regions on a grid, '.' for class 0 and '#' for class 1
    gx, gy = np.meshgrid(np.linspace(-1.5, 2.5, 64), np.linspace(-1.0, 1.5, 20))
    grid = np.c_[gx.ravel(), gy.ravel()]
    regions = model.predict_classes(grid).reshape(gx.shape)
    for row in regions[::-1]:
        print("".join(".#"[c] for c in row))
    return acc


if __name__ == "__main__":
    main()
