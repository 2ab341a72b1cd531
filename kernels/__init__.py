"""fastnn.kernels: the math of training, as Numba kernels.

Knows arrays and sizes only; imports nothing from fastnn. The same names with the same
arguments on every backend:
  reference  plain NumPy twins, the oracle the tests hold the kernels to;
  cpu        @njit(cache=True) kernels, float32 and float64;
  cuda       @cuda.jit twins of cpu, host functions over device arrays (imported on demand:
             it needs numba-cuda, the `cuda` extra);
and what they share:
  blas       the gemm the CPU kernels call (NumPy's own OpenBLAS where it has one);
  codes      the integer codes for activations, losses and optimizers, and the optimizer
             hyper-parameter slots;
  layout     where each layer lives in the one flat parameter buffer (mlp_layout) and the
             per-layer views into it (layer_views).
"""
from . import codes, layout

__all__ = ["codes", "layout"]
