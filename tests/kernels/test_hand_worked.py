"""One 2-2-1 network worked by hand: every intermediate of one SGD step, written as a literal.

The network (scikit-learn's neural_network test_fit does the same for its MLP):

    x (1, 2) --W1 (2, 2), b1 (2,)--> sigmoid --W2 (2, 1), b2 (1,)--> identity --> z (1, 1)
    loss = 1/2 (z - y)^2,  one SGD step with lr = 0.1, no momentum, no weight decay.

Every number below was worked out with the arithmetic in its comment (40-digit decimal
arithmetic, rounded to 12 significant digits), so a reader can redo backprop with a pencil and
a calculator. The kernels run in float64 and must agree to rel 1e-9: the literals carry
12 digits, so rounding them costs at most 5e-12 relative, far inside that tolerance.

Layout of the flat buffer, mlp_layout([2, 2, 1]) (each layer's weights row-major, then its bias):

    index  0     1     2     3     4     5     6     7     8
           W1₀₀  W1₀₁  W1₁₀  W1₁₁  b1₀   b1₁   W2₀₀  W2₁₀  b2₀
"""
import numpy as np
import pytest

from fastnn.kernels import codes, cpu
from fastnn.kernels.layout import mlp_layout

REL = 1e-9  # the literals are rounded to 12 significant digits (error <= 5e-12 relative)
LR = 0.1

# --------------------------------------------------------------------------- the problem

X = np.array([[1.0, 2.0]])
Y = np.array([[0.5]])
W1 = np.array([[0.1, 0.2],
               [0.3, 0.4]])
B1 = np.array([0.1, -0.1])
W2 = np.array([[0.5],
               [0.6]])
B2 = np.array([0.2])

# --------------------------------------------------------------------------- forward

# hidden pre-activation: pre1_j = x_0 W1_0j + x_1 W1_1j + b1_j
PRE1 = [0.8,   # 1 * 0.1 + 2 * 0.3 + 0.1  = 0.1 + 0.6 + 0.1
        0.9]   # 1 * 0.2 + 2 * 0.4 - 0.1  = 0.2 + 0.8 - 0.1
# hidden activation: a1_j = sigmoid(pre1_j) = 1 / (1 + exp(-pre1_j))
A1 = [0.689974481128,   # 1 / (1 + exp(-0.8)) = 1 / (1 + 0.449328964117)
      0.710949502625]   # 1 / (1 + exp(-0.9)) = 1 / (1 + 0.406569659740)
# output (identity): z = a1_0 W2_00 + a1_1 W2_10 + b2
#                      = 0.689974481128 * 0.5 + 0.710949502625 * 0.6 + 0.2
#                      = 0.344987240564       + 0.426569701575       + 0.2
Z = 0.971556942139

# --------------------------------------------------------------------------- loss

# r = z - y = 0.971556942139 - 0.5
R = 0.471556942139
# loss = 1/2 r^2 = 0.5 * 0.222365949679
LOSS = 0.111182974840
# dz = d(loss)/dz = r  (the identity output's delta: dpre2 = dz * 1)
DZ = R
DPRE2 = R

# --------------------------------------------------------------------------- backward

# output layer: dW2_i0 = a1_i * dpre2, db2 = dpre2
DW2 = [0.325362256474,   # 0.689974481128 * 0.471556942139
       0.335253173473]   # 0.710949502625 * 0.471556942139
DB2 = R
# back through W2: da1_i = dpre2 * W2_i0
DA1 = [0.235778471069,   # 0.471556942139 * 0.5
       0.282934165283]   # 0.471556942139 * 0.6
# sigmoid'(pre) = a (1 - a)
SIG_PRIME = [0.213909696520,   # 0.689974481128 * 0.310025518872
             0.205500307342]   # 0.710949502625 * 0.289050497375
# hidden delta: dpre1_j = da1_j * a1_j (1 - a1_j)
DPRE1 = [0.0504353011925,   # 0.235778471069 * 0.213909696520
         0.0581430579233]   # 0.282934165283 * 0.205500307342
# hidden layer: dW1_ij = x_i * dpre1_j, db1_j = dpre1_j
DW1 = [[0.0504353011925, 0.0581430579233],   # x_0 = 1: dpre1 itself
       [0.100870602385, 0.116286115847]]     # x_1 = 2: 2 * dpre1
DB1 = DPRE1

# --------------------------------------------------------------------------- one SGD step

# p_new = p - lr * grad
W1_NEW = [[0.0949564698808,   # 0.1 - 0.1 * 0.0504353011925
           0.194185694208],   # 0.2 - 0.1 * 0.0581430579233
          [0.289912939762,    # 0.3 - 0.1 * 0.100870602385
           0.388371388415]]   # 0.4 - 0.1 * 0.116286115847
B1_NEW = [0.0949564698808,    # 0.1 - 0.1 * 0.0504353011925
          -0.105814305792]    # -0.1 - 0.1 * 0.0581430579233
W2_NEW = [[0.467463774353],   # 0.5 - 0.1 * 0.325362256474
          [0.566474682653]]   # 0.6 - 0.1 * 0.335253173473
B2_NEW = [0.152844305786]     # 0.2 - 0.1 * 0.471556942139

# the whole flat buffer after the step, in mlp_layout([2, 2, 1]) order
PARAMS_NEW = [*np.ravel(W1_NEW), *B1_NEW, *np.ravel(W2_NEW), *B2_NEW]


# --------------------------------------------------------------------------- helpers

def _flat_params():
    """The starting weights packed into one flat buffer, with per-layer views into it."""
    w_off, b_off, n_params = mlp_layout([2, 2, 1])
    params = np.empty(n_params)
    views = _views(params, w_off, b_off)
    views["W1"][...] = W1
    views["b1"][...] = B1
    views["W2"][...] = W2
    views["b2"][...] = B2
    return params, views


def _views(buf, w_off, b_off):
    return {"W1": buf[w_off[0]:w_off[0] + 4].reshape(2, 2), "b1": buf[b_off[0]:b_off[0] + 2],
            "W2": buf[w_off[1]:w_off[1] + 2].reshape(2, 1), "b2": buf[b_off[1]:b_off[1] + 1]}


def _step_by_step():
    """Run one SGD step through the separate CPU kernels; return every intermediate."""
    params, p = _flat_params()
    w_off, b_off, _ = mlp_layout([2, 2, 1])
    grads = np.zeros_like(params)
    g = _views(grads, w_off, b_off)
    alpha = 0.0  # only LEAKY_RELU reads it

    pre1, a1 = np.empty((1, 2)), np.empty((1, 2))
    cpu.affine_act_forward(a1, pre1, X, p["W1"], p["b1"], codes.SIGMOID, alpha)
    pre2, z = np.empty((1, 1)), np.empty((1, 1))
    cpu.affine_act_forward(z, pre2, a1, p["W2"], p["b2"], codes.IDENTITY, alpha)

    dz = np.empty((1, 1))
    loss = cpu.mse(dz, z, Y, np.zeros(0), False)

    dpre2, da1 = np.empty((1, 1)), np.empty((1, 2))
    cpu.affine_act_backward(da1, dpre2, dz, pre2, z, p["W2"], codes.IDENTITY, alpha)
    cpu.weight_grad(g["W2"], g["b2"], a1, dpre2)
    dpre1 = np.empty((1, 2))
    no_dx = np.zeros((0, 0))  # first layer: nothing below to send a gradient to
    cpu.affine_act_backward(no_dx, dpre1, da1, pre1, a1, p["W1"], codes.SIGMOID, alpha)
    cpu.weight_grad(g["W1"], g["b1"], X, dpre1)

    grads_before_step = grads.copy()
    cpu.sgd_update(params, grads, np.zeros(0), LR, 0.0, False, 0.0)
    return dict(pre1=pre1, a1=a1, pre2=pre2, z=z, loss=loss, dz=dz, dpre2=dpre2, da1=da1,
                dpre1=dpre1, grads=g, grads_flat=grads_before_step, params=params, p=p)


@pytest.fixture(scope="module")
def run():
    return _step_by_step()


# --------------------------------------------------------------------------- tests

def test_layout_is_the_one_drawn_in_the_docstring():
    w_off, b_off, n_params = mlp_layout([2, 2, 1])
    assert list(w_off) == [0, 6]
    assert list(b_off) == [4, 8]
    assert n_params == 9


def test_forward(run):
    assert run["pre1"][0] == pytest.approx(PRE1, rel=REL)
    assert run["a1"][0] == pytest.approx(A1, rel=REL)
    assert run["pre2"][0, 0] == pytest.approx(Z, rel=REL)  # identity: pre2 = z
    assert run["z"][0, 0] == pytest.approx(Z, rel=REL)


def test_loss_and_its_gradient(run):
    assert run["loss"] == pytest.approx(LOSS, rel=REL)
    assert run["dz"][0, 0] == pytest.approx(DZ, rel=REL)


def test_backward_deltas(run):
    assert run["dpre2"][0, 0] == pytest.approx(DPRE2, rel=REL)
    assert run["da1"][0] == pytest.approx(DA1, rel=REL)
    # the sigmoid derivative the kernel used, recovered from its inputs and output
    assert (run["dpre1"][0] / run["da1"][0]) == pytest.approx(SIG_PRIME, rel=REL)
    assert run["dpre1"][0] == pytest.approx(DPRE1, rel=REL)


def test_weight_gradients(run):
    g = run["grads"]
    assert g["W2"].ravel() == pytest.approx(DW2, rel=REL)
    assert g["b2"] == pytest.approx([DB2], rel=REL)
    assert g["W1"].ravel() == pytest.approx(np.ravel(DW1), rel=REL)
    assert g["b1"] == pytest.approx(DB1, rel=REL)
    # and in the flat buffer, in layout order
    expected = [*np.ravel(DW1), *DB1, *DW2, DB2]
    assert run["grads_flat"] == pytest.approx(expected, rel=REL)


def test_sgd_step_updates_every_weight(run):
    p = run["p"]
    assert p["W1"].ravel() == pytest.approx(np.ravel(W1_NEW), rel=REL)
    assert p["b1"] == pytest.approx(B1_NEW, rel=REL)
    assert p["W2"].ravel() == pytest.approx(np.ravel(W2_NEW), rel=REL)
    assert p["b2"] == pytest.approx(B2_NEW, rel=REL)
    assert run["params"] == pytest.approx(PARAMS_NEW, rel=REL)


def test_fused_sgd_epoch_takes_the_same_step():
    params, _ = _flat_params()
    w_off, b_off, _ = mlp_layout([2, 2, 1])
    loss = cpu.sgd_epoch(
        params, X, np.zeros(0, np.int64), Y, np.array([0]), np.array([2, 2, 1]),
        w_off, b_off, np.array([codes.SIGMOID, codes.IDENTITY]), 0.0, np.zeros(2), 0,
        codes.LOSS_MSE, LR, 0.0)
    assert loss == pytest.approx(LOSS, rel=REL)  # the loss before the update
    assert params == pytest.approx(PARAMS_NEW, rel=REL)
