"""CPU LUT kernels (AVX-512, AVX2, portable) against the numpy LUT reference and the float64 dequantized
matmul, on awkward shapes; and their input checks."""
import numpy as np
import pytest
import torch

import lutc
from lutc.codegen.cpu.isa import ISAS, supported
from lutc.codegen.reference.lut import lut_matmul, precompute
from lutc.passes.quantize import LayerQuant

ISA_LIST = [i for i in ISAS if supported(i)]
RNG = np.random.default_rng(11)


def reference(q, x):
    """The literal int8-table LUT matmul of the reference target, and the exact dequantized matmul."""
    t = precompute(x.reshape(-1, q.k), q.k_pad, q.group_size, "int8")
    lut = lut_matmul(*t, q.packed(), q.scales, q.zeros, None, bits=q.bits, group_size=q.group_size)
    return lut.reshape(x.shape[:-1] + (q.n,)), x.astype(np.float64) @ q.dequantize().astype(np.float64).T


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, m, sym", [(100, 300, 64, 1, False), (65, 1000, 128, 3, True),
                                                  (130, 257, 32, 17, False), (64, 512, 256, 2, False),
                                                  # one row over 5 tiles: the GEMV reads tiles in pairs (t, t + half),
                                                  # an odd one alone, per thread
                                                  (317, 200, 32, 1, True)])
def test_kernel_matches_reference(isa, bits, n, k, group, m, sym):
    if bits == "ternary" and sym:
        sym = False
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, symmetric=sym))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    lut, exact = reference(q, x)
    for threads in (1, 2):
        y = lutc.kernels.build_lut_matmul(q, threads=threads, isa=isa)(x)
        assert y.shape == (m, n) and y.dtype == np.float32
        # same tables, same integer lookups: only the float rescaling order differs (f32 vs f64)
        assert rel(y, lut) < 2e-6
        # int8 tables: ~1e-2 relative against the exact dequantized matmul (design.md section 2)
        assert rel(y, exact) < 2e-2


def test_inputs_are_checked_or_copied():
    q = lutc.quantize_weight(RNG.standard_normal((70, 96)), LayerQuant(bits=2, group_size=32))
    kern = lutc.kernels.build_lut_matmul(q, threads=1)
    x = RNG.standard_normal((4, 96)).astype(np.float32)
    want = kern(x)
    with pytest.raises(TypeError, match="float activations"):
        kern(x.astype(np.int32))
    with pytest.raises(ValueError, match=r"\[..., 96\]"):
        kern(x[:, :95])
    with pytest.raises(ValueError, match=r"\[..., 96\]"):
        kern(np.float32(3.0))
    big = np.zeros((4, 200), np.float32)
    big[:, ::2][:, :96] = x
    np.testing.assert_array_equal(kern(big[:, ::2][:, :96]), want)           # non-contiguous: copied
    raw = np.zeros(4 * 96 + 1, np.float32)
    unaligned = raw[1:].reshape(4, 96)
    unaligned[...] = x
    assert unaligned.ctypes.data % 64 != 0
    np.testing.assert_array_equal(kern(unaligned), want)                     # unaligned: copied
    np.testing.assert_array_equal(kern(torch.from_numpy(x)), want)           # torch in, numpy out
    np.testing.assert_allclose(kern(x.astype(np.float64)), want)             # other float dtypes: converted
    assert kern(x.reshape(2, 2, 96)).shape == (2, 2, 70)
    assert kern(np.zeros((0, 96), np.float32)).shape == (0, 70)


def test_unsupported_configurations_say_so():
    w = RNG.standard_normal((64, 512))
    with pytest.raises(NotImplementedError, match="group sizes up to 256"):
        lutc.kernels.build_lut_matmul(lutc.quantize_weight(w, LayerQuant(group_size=512)))
    with pytest.raises(TypeError, match="QuantizedWeight"):
        lutc.kernels.build_lut_matmul(w)
    with pytest.raises(NotImplementedError, match="target 'tpu'"):
        lutc.kernels.build_lut_matmul(lutc.quantize_weight(w, LayerQuant()), target="tpu")
