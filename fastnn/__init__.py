"""fastnn: fast training of small and medium neural networks and linear models, on Numba kernels."""
__version__ = "0.1.0"

from . import kernels  # noqa: E402  (fastnn.kernels is the installed kernels/ directory)

__all__ = ["kernels", "__version__"]
