"""fastnn: fast training of small and medium neural networks and linear models, on Numba kernels."""
__version__ = "0.1.0"

from . import kernels  # noqa: E402  (fastnn.kernels is the installed kernels/ directory)
from . import callbacks, losses, optim  # noqa: E402
from .diagnostics import gradcheck  # noqa: E402
from .io import load, save  # noqa: E402
from .layers import L2, Dense, Dropout  # noqa: E402
from .models import DivergenceError, Sequential  # noqa: E402

optimizers = optim  # Keras' module name: `optimizers.Adam(lr=0.001)` as the notes write it

__all__ = ["kernels", "callbacks", "losses", "optim", "optimizers", "Dense", "Dropout", "L2",
           "Sequential", "DivergenceError", "gradcheck", "load", "save", "__version__"]
