"""Seed 002's effect of C, shown: soft-margin SVMs (fastnn.svm.SVC) on 2-D data for several C,
one panel each, with the decision boundary f(x) = 0, the margin lines f(x) = ±1, and the
support vectors circled. Small C: a wide margin with many support vectors; large C: a narrow
margin with few (C → ∞ is the hard margin). A linear and an RBF kernel, one row each. Writes
svm_margin.png (needs matplotlib: pip install 'fastnn-numba[plot]').

    python examples/svm_margin.py [--out svm_margin]
"""
import argparse
import pathlib

import numpy as np

from fastnn.svm import SVC


def make_data(n, seed=0):
    """Two overlapping Gaussian clouds in 2-D, n points each: a soft margin has work to do."""
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal([-1.0, -1.0], 1.0, (n, 2)), rng.normal([1.2, 1.0], 1.0, (n, 2))])
    return x, np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]


def main(out="svm_margin", n=60, cs=(0.01, 1.0, 100.0), grid=200):
    """Fit one SVC per (kernel, C) and draw them into <out>/svm_margin.png; returns
    {(kernel, C): number of support vectors}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = make_data(n)
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    points = np.column_stack([gx.ravel(), gy.ravel()])
    kernels = ("linear", "rbf")
    fig, axes = plt.subplots(len(kernels), len(cs), figsize=(4 * len(cs), 4 * len(kernels)),
                             squeeze=False)
    counts = {}
    for row, kernel in enumerate(kernels):
        for col, c in enumerate(cs):
            clf = SVC(C=c, kernel=kernel).fit(x, y)
            counts[kernel, c] = clf.support_.size
            f = clf.decision_function(points).reshape(gx.shape)
            ax = axes[row, col]
            ax.contourf(gx, gy, f, levels=[-1e9, 0, 1e9], colors=["#f6d5d5", "#d5dcf6"])
            ax.contour(gx, gy, f, levels=[-1, 0, 1], colors="k", linestyles=["--", "-", "--"],
                       linewidths=[1, 1.5, 1])
            ax.scatter(x[:, 0], x[:, 1], c=np.where(y == 1, "#2b50c8", "#c83b2b"), s=12)
            sv = clf.support_vectors_
            ax.scatter(sv[:, 0], sv[:, 1], s=80, facecolors="none", edgecolors="k",
                       linewidths=1)
            ax.set_title(f"{kernel}, C = {c:g}: {clf.support_.size} support vectors")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("soft-margin SVM: smaller C, wider margin (dashed: f(x) = ±1), more "
                 "support vectors (circled)")
    fig.tight_layout()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "svm_margin.png", dpi=100)
    plt.close(fig)
    for (kernel, c), count in counts.items():
        print(f"{kernel:6s} C = {c:<8g} {count:4d} support vectors")
    print(f"wrote {out / 'svm_margin.png'}")
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="svm_margin", help="folder for svm_margin.png")
    main(out=parser.parse_args().out)
