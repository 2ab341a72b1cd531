"""Pictures of a model and its training: plot_history (loss and metric curves),
plot_decision_boundary (the decision regions of any 2-D classifier) and plot_kl_vs_l2 (seed
004's comparison of the two divergences for a binary output).

matplotlib is an optional extra, imported when a function draws: `pip install
'fastnn-numba[plot]'`. Each function draws into `ax` when given (else a new figure), writes a
PNG to `path` when given, and returns the matplotlib Figure. Models are duck-typed: anything
with predict_proba, decision_function or predict (a fastnn Sequential, a fastnn or
scikit-learn estimator, a Pipeline) can be drawn, so this module imports no model class.
"""
import numpy as np

from .validation import check_positive_int, check_x

PLOT_EXTRA = "pip install 'fastnn-numba[plot]'"


def pyplot():
    """matplotlib.pyplot, or an ImportError that names the extra to install."""
    try:
        import matplotlib.pyplot as plt  # headless, matplotlib falls back to Agg by itself
    except ImportError as exc:
        raise ImportError(f"fastnn.plot draws with matplotlib, which is not installed; "
                          f"install the plot extra: {PLOT_EXTRA}") from exc
    return plt


def _figure(ax, figsize):
    plt = pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    return fig, ax


def _finish(fig, path):
    if path is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    return fig


def plot_history(history, path=None, ax=None):
    """The loss and metric curves of a fit, per epoch: every key of the history, training
    solid and validation ("val_" keys) dashed in the same colour, the loss on the left axis and
    the metrics on a right one (they live on other scales).

    Parameters
    ----------
    history : fastnn.callbacks.History (what fit returns) or dict of name -> list
    path : str or path-like, optional
        Write the figure as a PNG there.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError("history must be a History from fit or a non-empty dict of "
                         f"name -> per-epoch values, got {type(history).__name__}")
    fig, ax = _figure(ax, (6.5, 4.0))
    names = [k for k in logs if not k.startswith("val_")]
    names += [k[4:] for k in logs if k.startswith("val_") and k[4:] not in names]
    metric_ax = None
    for i, name in enumerate(names):
        target = ax if name == "loss" else None
        if target is None:
            metric_ax = metric_ax or ax.twinx()
            target = metric_ax
        colour = f"C{i}"
        for key, style, label in ((name, "-", name), ("val_" + name, "--", "val_" + name)):
            if key in logs:
                values = np.asarray(logs[key], np.float64)
                target.plot(np.arange(1, values.size + 1), values, style, color=colour,
                            label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if metric_ax is not None:
        metric_ax.set_ylabel("metric")
        more = metric_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, loc="best")
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)


def _scores(model, grid):
    """(class per grid point, a confidence per point in [0, 1] or None) by duck typing."""
    if hasattr(model, "predict_proba"):
        p = np.asarray(model.predict_proba(grid), np.float64)
        if p.ndim == 1 or p.shape[1] == 1:  # one sigmoid output: P(class 1)
            p1 = p.reshape(-1)
            return (p1 > 0.5).astype(np.int64), p1
        classes = np.argmax(p, axis=1)
        if p.shape[1] == 2:
            return classes, p[:, 1]
        return classes, p.max(axis=1)
    if hasattr(model, "decision_function"):
        d = np.asarray(model.decision_function(grid), np.float64)
        if d.ndim == 1 or d.shape[1] == 1:
            d = d.reshape(-1)
            return (d > 0).astype(np.int64), None
        return np.argmax(d, axis=1), None
    if hasattr(model, "predict"):
        out = np.asarray(model.predict(grid))
        if out.ndim == 2 and out.shape[1] > 1:  # a Sequential's logits
            return np.argmax(out, axis=1), None
        out = out.reshape(-1)
        if out.dtype.kind == "f":  # one score: a probability (cut at 0.5) or a logit (at 0)
            cut = 0.5 if np.all((out >= 0) & (out <= 1)) else 0.0
            return (out > cut).astype(np.int64), None
        return out, None
    raise TypeError(f"model must have predict_proba, decision_function or predict, got "
                    f"{type(model).__name__}")


def plot_decision_boundary(model, X, y, path=None, ax=None, resolution=200, padding=0.5):
    """The decision regions of a trained 2-D classifier, with the points of (X, y) on top:
    colour by predicted class over a grid spanning X (plus `padding`), shaded by the
    predicted probability where the model has predict_proba, and the 0.5 contour of a binary
    model's probability drawn as the boundary.

    Parameters
    ----------
    model : a fastnn Sequential or any estimator with predict_proba, decision_function or
        predict (fastnn's and scikit-learn's), already fitted
    X : ndarray of shape (n_samples, 2)
    y : ndarray of shape (n_samples,), the classes to colour the points by
    path : str or path-like, optional
        Write the figure as a PNG there.
    ax : matplotlib Axes, optional
    resolution : int, default 200
        Grid points per axis.
    padding : float, default 0.5
        Margin around X's range, in X's units.

    Returns
    -------
    matplotlib.figure.Figure
    """
    X = check_x(X, "X", 2, np.float64)
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y have different lengths: {X.shape[0]} and {y.shape[0]}")
    resolution = check_positive_int(resolution, "resolution")
    lo, hi = X.min(axis=0) - padding, X.max(axis=0) + padding
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.c_[gx.ravel(), gy.ravel()]
    classes, confidence = _scores(model, grid)
    fig, ax = _figure(ax, (5.5, 4.5))
    _, codes = np.unique(np.r_[classes, y], return_inverse=True)
    n_classes = int(codes.max()) + 1
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(gx, gy, codes[:classes.size].reshape(gx.shape), levels=levels, cmap="coolwarm"
                if n_classes == 2 else "tab10", alpha=0.35)
    if confidence is not None and n_classes == 2:
        ax.contour(gx, gy, confidence.reshape(gx.shape), levels=[0.5], colors="k",
                   linewidths=1.0)
    ax.scatter(X[:, 0], X[:, 1], c=codes[classes.size:], cmap="coolwarm" if n_classes == 2
               else "tab10", vmin=0, vmax=max(n_classes - 1, 1), edgecolors="k", s=18)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    return _finish(fig, path)


def plot_kl_vs_l2(d=1, path=None, ax=None):
    """Seed 004's "KL vs L2" for a binary classifier's output Y in (0, 1) against its target
    d in {0, 1}: the squared error (Y - d)^2 and KL(Y, d) = -d log Y - (1 - d) log(1 - Y). Both
    are least at Y = d; KL rises much more steeply away from it (faster gradient descent), and
    its derivative is not 0 there while L2's is.

    The notes' L2 here is (Y - d)^2, without the 1/2 of their squared-error divergence (and of
    fastnn's mse loss); the figure follows the notes.

    Parameters
    ----------
    d : {0, 1}, default 1
    path : str or path-like, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    if d not in (0, 1):
        raise ValueError(f"d must be 0 or 1, got {d!r}")
    y = np.linspace(1e-3, 1 - 1e-3, 400)
    kl = -np.log(y) if d == 1 else -np.log1p(-y)
    fig, ax = _figure(ax, (5.5, 4.0))
    ax.plot(y, (y - d) ** 2, label="L2: (Y - d)²")
    ax.plot(y, kl, label="KL: -d log Y - (1 - d) log(1 - Y)")
    ax.set_ylim(0, 5)
    ax.set_xlabel("output Y")
    ax.set_ylabel("divergence")
    ax.set_title(f"KL vs L2, target d = {d}")
    ax.axvline(d, color="k", lw=0.5)
    ax.legend()
    ax.grid(True, alpha=0.3)
    return _finish(fig, path)
