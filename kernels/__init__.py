"""fastnn.kernels: the math of training, as Numba kernels.

Knows arrays and sizes only; imports nothing from fastnn. Three modules with one set of names:
  reference  plain NumPy twins, the oracle the tests hold the kernels to;
  cpu        @njit(cache=True) kernels, float32 and float64;
  codes      the integer codes for activations and losses the kernels take.
"""
from . import codes

__all__ = ["codes"]
