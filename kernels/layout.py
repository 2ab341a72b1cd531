"""Where each layer's weights and bias live inside the one flat parameter buffer.

llm.c's layout: all parameters of a model in one array of length P, layer by layer, each
layer's (fan_in, fan_out) weight block in row-major order followed by its bias. Optimizers then
update one array in one call, and the fused epoch kernel finds every layer from two offsets.
"""
import numpy as np


def mlp_layout(sizes, has_bias=True):
    """Offsets for an MLP with layer widths `sizes` (input first, output last).

    Returns (w_off, b_off, n_params): int64 arrays of length L = len(sizes) - 1; layer l's
    weights are params[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]] (reshape (sizes[l],
    sizes[l + 1])), its bias params[b_off[l]:b_off[l] + sizes[l + 1]], or b_off[l] = -1 when
    the layer has none. has_bias is one bool for all layers or one per layer."""
    n_layers = len(sizes) - 1
    bias = np.broadcast_to(np.asarray(has_bias, dtype=bool), (n_layers,))
    w_off = np.empty(n_layers, np.int64)
    b_off = np.empty(n_layers, np.int64)
    p = 0
    for l in range(n_layers):
        w_off[l] = p
        p += int(sizes[l]) * int(sizes[l + 1])
        if bias[l]:
            b_off[l] = p
            p += int(sizes[l + 1])
        else:
            b_off[l] = -1
    return w_off, b_off, p


def layer_views(buf, sizes, w_off, b_off):
    """Per-layer views into the flat buffer `buf` laid out by mlp_layout: ([W_l of shape
    (sizes[l], sizes[l + 1])], [b_l of shape (sizes[l + 1],)]), an empty bias view where a
    layer has none. The one place the flat buffer is sliced: plain Python here and in the
    reference, numba device arrays in kernels.cuda, and compiled as is by kernels.cpu."""
    n_layers = len(sizes) - 1
    ws = [buf[w_off[l]:w_off[l] + sizes[l] * sizes[l + 1]].reshape((sizes[l], sizes[l + 1]))
          for l in range(n_layers)]
    bs = [buf[b_off[l]:b_off[l] + sizes[l + 1]] if b_off[l] >= 0 else buf[:0]
          for l in range(n_layers)]
    return ws, bs
