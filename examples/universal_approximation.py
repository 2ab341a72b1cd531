"""Seed 003's universal approximation theorem, drawn: a step from one sigmoid unit
(w = 5, 10, 100 with b = 0, 3, -7, -20), a bump from two steps, a function as a sum of bumps
in 1-D and as a sum of towers in 2-D; then one-hidden-layer sigmoid networks of growing width
trained on a 1-D function, their fits, and the error against the number of hidden units.
Writes PNGs into --out (needs matplotlib: pip install 'fastnn-numba[plot]').

    python examples/universal_approximation.py [--out universal_approximation]
"""
import argparse
import pathlib

import numpy as np

import fastnn as fn
from fastnn.kernels import cpu, codes
from fastnn.plot import pyplot


def sigmoid(z):
    out = np.empty_like(z)
    cpu.activation_forward(out.reshape(1, -1), z.reshape(1, -1), codes.SIGMOID, 0.0)
    return out


def step(x, w, b):
    """One sigmoid unit sigmoid(w x + b): a smooth step at x = -b / w, sharper as w grows."""
    return sigmoid(w * x + b)


def bump(x, left, right, height, w=100.0):
    """Two steps, one subtracted from the other (the notes' w3 = h, w4 = -h): height h on
    [left, right], ~0 elsewhere."""
    return height * (step(x, w, -w * left) - step(x, w, -w * right))


def target(x):
    """The 1-D function the bumps and the networks approximate."""
    return np.sin(2 * np.pi * x) + 0.5 * np.cos(5 * np.pi * x) * x


def sum_of_bumps(x, n):
    """n bumps of width 1 / n on [0, 1], each as high as the function at its centre."""
    edges = np.linspace(0, 1, n + 1)
    return sum(bump(x, a, b, target((a + b) / 2), w=20.0 * n) for a, b in zip(edges, edges[1:]))


def tower(x1, x2, box, w=60.0):
    """2-D: a bump in x1 plus a bump in x2 is 2 on the box, 1 on its cross, 0 elsewhere; one
    more sigmoid thresholds at 1.5 and keeps the box: a tower of height ~1."""
    (a1, b1), (a2, b2) = box
    s = bump(x1, a1, b1, 1.0, w) + bump(x2, a2, b2, 1.0, w)
    return sigmoid(w / 4 * (s - 1.5))


def target_2d(x1, x2):
    return np.exp(-8 * ((x1 - 0.35) ** 2 + (x2 - 0.6) ** 2)) + 0.6 * np.exp(
        -20 * ((x1 - 0.75) ** 2 + (x2 - 0.25) ** 2))


def sum_of_towers(x1, x2, n):
    edges = np.linspace(0, 1, n + 1)
    total = np.zeros_like(x1)
    for a1, b1 in zip(edges, edges[1:]):
        for a2, b2 in zip(edges, edges[1:]):
            total += target_2d((a1 + b1) / 2, (a2 + b2) / 2) * tower(
                x1, x2, ((a1, b1), (a2, b2)), w=30.0 * n)
    return total


def features(x):
    """x in [0, 1] centred and spread to [-2, 2]: with Glorot's small initial weights the
    sigmoids then start as gentle steps across the whole interval instead of near-linear
    pieces, and Adam needs a third of the epochs."""
    return 4.0 * (x - 0.5)


def train(width, x, y, epochs, seed=0):
    """One hidden layer of `width` sigmoid units and a linear output, mse, full-batch Adam."""
    model = fn.Sequential([fn.Dense(width, activation="sigmoid"), fn.Dense(1)], seed=seed,
                          dtype="float64")
    model.compile(optimizer=fn.optim.Adam(lr=0.02), loss="mse")
    model.fit(features(x), y, epochs=epochs, batch_size=None, shuffle=False, verbose=0)
    return model


def main(out="universal_approximation", widths=(1, 2, 4, 8, 16, 32), epochs=6000,
         n_points=200):
    """Write the figures into `out`; returns {hidden units: test mean squared error}."""
    plt = pyplot()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = np.linspace(-1, 1, 400)
    paths = []

    fig, axes = plt.subplots(1, 4, figsize=(13, 3), sharey=True)
    for ax, (w, b) in zip(axes, [(5, 0), (5, 3), (10, -7), (100, -20)]):
        ax.plot(x, step(x, w, b))
        ax.set_title(f"sigmoid(w x + b), w = {w}, b = {b}")
        ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "step_from_sigmoid.png"))

    u = np.linspace(0, 1, 400)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
    first = bump(u, 0.2, 0.4, 1.0)   # w1 = w2 = 100, b1 = -20, b2 = -40, w3 = 1, w4 = -1
    second = bump(u, 0.6, 0.8, 2.0)  # b1 = -60, b2 = -80, w3 = 2, w4 = -2
    for ax, curve, title in zip(axes, (first, second, first + second), (
            "w = 100, b = -20, -40; h = 1", "w = 100, b = -60, -80; h = 2", "their sum")):
        ax.plot(u, curve)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "bump_from_two_steps.png"))

    fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
    for ax, n in zip(axes, (5, 10, 40)):
        ax.plot(u, target(u), "k--", lw=1, label="f(x)")
        ax.plot(u, sum_of_bumps(u, n), label=f"{n} bumps = {2 * n} sigmoids")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(True, alpha=0.3)
    paths.append(_save(fig, out / "sum_of_bumps_1d.png"))

    g1, g2 = np.meshgrid(np.linspace(0, 1, 50), np.linspace(0, 1, 50))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), subplot_kw={"projection": "3d"})
    surfaces = [(tower(g1, g2, ((0.3, 0.6), (0.4, 0.7))), "one tower (4 + 1 sigmoids)"),
                (sum_of_towers(g1, g2, 8), "8 x 8 towers"), (target_2d(g1, g2), "f(x1, x2)")]
    for ax, (surface, title) in zip(axes, surfaces):
        ax.plot_surface(g1, g2, surface, cmap="viridis", linewidth=0)
        ax.set_title(title)
    paths.append(_save(fig, out / "sum_of_bumps_2d.png"))

    xs = np.linspace(0, 1, n_points)[:, None]
    ys = target(xs)
    test = np.linspace(0, 1, 997)[:, None]  # off the training grid
    errors = {}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(test, target(test), "k--", lw=1, label="f(x)")
    for width in widths:
        model = train(width, xs, ys, epochs)
        pred = model.predict(features(test))
        errors[width] = float(np.mean((pred - target(test)) ** 2))
        ax.plot(test, pred, label=f"{width} hidden")
        print(f"{width:4d} hidden sigmoid units: test mean squared error {errors[width]:.2e}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.set_title("one hidden layer of sigmoids, growing width")
    paths.append(_save(fig, out / "fit_by_width.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(list(errors), list(errors.values()), "o-")
    ax.set_xlabel("hidden units")
    ax.set_ylabel("test mean squared error")
    ax.grid(True, which="both", alpha=0.3)
    paths.append(_save(fig, out / "error_vs_width.png"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return errors


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="universal_approximation", help="folder for the PNGs")
    main(parser.parse_args().out)
