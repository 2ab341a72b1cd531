"""A digits MLP with fastnn beside scikit-learn's MLPClassifier: same architecture, optimizer,
batch size, epochs and data split; prints test accuracy and fit time for both.

    python examples/digits_mlp.py          (needs scikit-learn, which ships the digits data)
"""
import time
import warnings


import fastnn as fn
from fastnn.datasets import load_digits, train_test_split

HIDDEN, EPOCHS, BATCH, LR = 256, 100, 32, 1e-3


def main():
    x, y = load_digits()
    x = x / 16.0  # pixel values 0..16 to [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.25, seed=0)

    model = fn.Sequential([fn.Dense(HIDDEN, activation="relu"), fn.Dense(10)], seed=0)
    model.compile(optimizer=fn.optim.Adam(lr=LR), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    model.fit(x_train[:BATCH], y_train[:BATCH], epochs=1, verbose=0)  # compile the kernels
    model = fn.Sequential([fn.Dense(HIDDEN, activation="relu"), fn.Dense(10)], seed=0)
    model.compile(optimizer=fn.optim.Adam(lr=LR), loss="softmax_cross_entropy",
                  metrics=["accuracy"])
    t = time.perf_counter()
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    fastnn_s = time.perf_counter() - t
    fastnn_acc = model.evaluate(x_test, y_test)["accuracy"]

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), activation="relu", solver="adam",
                        learning_rate_init=LR, batch_size=BATCH, max_iter=EPOCHS, alpha=0.0,
                        tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t = time.perf_counter()
        clf.fit(x_train, y_train)
        sklearn_s = time.perf_counter() - t
    sklearn_acc = clf.score(x_test, y_test)

    print(f"digits, MLP 64-{HIDDEN}-10 (ReLU), Adam lr {LR}, batch {BATCH}, {EPOCHS} epochs, "
          f"{len(x_train)} train / {len(x_test)} test samples")
    print(f"  fastnn        test accuracy {fastnn_acc:.4f}   fit {fastnn_s:.3f} s")
    print(f"  scikit-learn  test accuracy {sklearn_acc:.4f}   fit {sklearn_s:.3f} s "
          f"({sklearn_s / fastnn_s:.1f}x fastnn's time)")
    return fastnn_acc, sklearn_acc


if __name__ == "__main__":
    main()
