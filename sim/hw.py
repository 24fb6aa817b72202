"""Area, power and compute density of an lmma LUT array and of a multiply-accumulate (MAC) tensor-core
array with the same parameters, from gate counts.

Everything is counted in NAND2 gate equivalents (GE) from textbook standard-cell ratios; two constants are
calibrated to the LUT Tensor Core paper's 28 nm figures and nothing else is fitted:

* ``UM2_PER_GE`` (area of one GE at the model clock) so that a DP4 LUT unit (W1 x A fp16: an 8:1 table
  mux, the sign flip, the bit-serial shift and an fp16 adder) reaches **61.55 TFLOPs/mm²**;
* ``MUL_F16`` (GE of an fp16 multiplier) so that a DP4 fp16 MAC unit (4 multipliers, a 3-adder tree and
  the accumulating adder) reaches **3.39 TFLOPs/mm²**.

The fp16 adder (``ADD_F16``, 350 GE) is a prior, not a fit; `bench/lutsim_dse.py` shows over which range of
it the K = 4 optimum holds. Arrays add what a DP4 unit does not have: operand staging registers (tables,
weight indices or dequantized weights), output registers, broadcast buffers and, for the MAC baseline, the
dequantization units (``(q - z) * s`` per weight per cycle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FREQ_GHZ = 1.0
# gate equivalents (NAND2 = 1)
DFF = 5.0          # flip-flop, per bit
MUX2 = 2.33        # 2:1 mux, per bit
XOR2 = 2.0
FA = 7.0           # full adder (integer adders: per bit)
BUF = 0.25         # broadcast buffering, per bit per fanout
ADD_F16 = 350.0    # fp16 adder (prior)
ADD_F32 = 2.6 * ADD_F16
SHIFT_FP = 5 * FA  # bit-serial 2^t on a float: an exponent add
# the paper's anchors (28 nm)
LUT_DP4_TFLOPS_MM2 = 61.55
MAC_DP4_TFLOPS_MM2 = 3.39
E_GE_FJ = 1.0      # switching energy of one GE toggle at 28 nm, 0.9 V (assumption, not calibrated)
ACTIVITY = 0.25    # average toggle rate of logic and registers per cycle
LEAK = 0.10        # leakage as a fraction of dynamic power

A_BITS = {"f16": 16, "s8": 8, "f8": 8, "f32": 32}
ACC = {"f16": "f16", "s8": "s32", "f8": "f16", "f32": "f32"}   # accumulator each A dtype uses in the array


def adder_ge(acc: str) -> float:
    return {"f16": ADD_F16, "f32": ADD_F32, "s32": 32 * FA, "s16": 16 * FA}[acc]


def acc_bits(acc: str) -> int:
    return {"f16": 16, "f32": 32, "s32": 32, "s16": 16}[acc]


def lut_pe_ge(k: int, a: str, max_bits: int = 4, acc: str | None = None) -> float:
    """One LUT processing element: a 2^(K-1):1 mux of A-bit entries, the sign flip (one XOR for floats,
    a conditional negate for integers), the bit-serial shift and the accumulating adder."""
    acc = acc or ACC[a]
    ab = A_BITS[a]
    mux = ((1 << (k - 1)) - 1) * ab * MUX2
    sign = XOR2 if a.startswith("f") else ab * XOR2
    shift = SHIFT_FP if acc.startswith("f") else math.ceil(math.log2(max(max_bits, 2))) * acc_bits(acc) * MUX2
    return mux + sign + shift + adder_ge(acc)


def mul_ge(a: str) -> float:
    if a == "f16":
        return MUL_F16
    if a == "f8":
        return MUL_F16 * 0.3   # 4-bit mantissas: roughly (4/11)^2 of the array plus the exponent logic
    if a == "f32":
        return MUL_F16 * 4.5
    return A_BITS[a] ** 2 * FA  # integer array multiplier


def _calibrate():
    lut_ge = lut_pe_ge(4, "f16", max_bits=1, acc="f16")
    um2_per_ge = 8 * FREQ_GHZ * 1e9 / (LUT_DP4_TFLOPS_MM2 * 1e12) * 1e6 / lut_ge
    mac_ge = 8 * FREQ_GHZ * 1e9 / (MAC_DP4_TFLOPS_MM2 * 1e12) * 1e6 / um2_per_ge
    return um2_per_ge, (mac_ge - 4 * ADD_F16) / 4


UM2_PER_GE, MUL_F16 = _calibrate()


@dataclass(frozen=True)
class ArrayModel:
    kind: str           # "lut" | "mac"
    m: int
    n: int
    k: int
    a: str              # activation dtype: f16 | s8 | f8
    w_bits: int         # weight bits of the workload (bit-serial passes for the LUT array)
    parts: dict         # GE per component

    @property
    def ge(self) -> float:
        return sum(self.parts.values())

    @property
    def area_mm2(self) -> float:
        return self.ge * UM2_PER_GE * 1e-6

    @property
    def flops_per_cycle(self) -> float:
        """2 M N K per pass; the LUT array needs b passes for b-bit weights, the MAC array one."""
        return 2 * self.m * self.n * self.k / (self.w_bits if self.kind == "lut" else 1)

    @property
    def tflops(self) -> float:
        return self.flops_per_cycle * FREQ_GHZ * 1e9 / 1e12

    @property
    def density(self) -> float:
        """TFLOPs/mm²"""
        return self.tflops / self.area_mm2

    @property
    def power_mw(self) -> float:
        dyn = self.ge * ACTIVITY * E_GE_FJ * 1e-15 * FREQ_GHZ * 1e9  # W
        return dyn * (1 + LEAK) * 1e3

    @property
    def energy_pj_per_cycle(self) -> float:
        return self.power_mw * 1e-3 / (FREQ_GHZ * 1e9) * 1e12

    @property
    def tflops_per_w(self) -> float:
        return self.tflops / (self.power_mw * 1e-3)

    @property
    def table_reuse(self) -> float:
        """Lookups served per table entry staged in the array: N columns x b bit-serial passes."""
        return self.n * self.w_bits if self.kind == "lut" else float("nan")

    @property
    def table_bits(self) -> int:
        return self.m * (1 << (self.k - 1)) * A_BITS[self.a] if self.kind == "lut" else 0

    @property
    def name(self) -> str:
        return f"M{self.m}N{self.n}K{self.k}"


def lut_array(m: int, n: int, k: int, a: str = "f16", w_bits: int = 1, acc: str | None = None) -> ArrayModel:
    acc = acc or ACC[a]
    e, ab = 1 << (k - 1), A_BITS[a]
    parts = {
        "pe_logic": m * n * lut_pe_ge(k, a, 4, acc),
        "table_regs": m * e * ab * DFF,
        "weight_regs": n * k * DFF,                   # one bit plane of K-bit indices
        "out_regs": m * n * acc_bits(acc) * DFF,
        "broadcast": (m * e * ab * n + n * k * m) * BUF,
    }
    return ArrayModel("lut", m, n, k, a, w_bits, parts)


def mac_array(m: int, n: int, k: int, a: str = "f16", w_bits: int = 4, acc: str | None = None) -> ArrayModel:
    """Dequantize-then-MAC tensor core: K multipliers and a K-input adder tree per output, the N x K
    weights of a cycle dequantized once ((q - z) * s: one multiply and one add each) and shared by M."""
    acc = acc or ACC[a]
    ab = A_BITS[a]
    add = adder_ge(acc) if a.startswith("f") else adder_ge("s32")
    parts = {
        "pe_logic": m * n * (k * mul_ge(a) + (k - 1) * add + adder_ge(acc)),
        "act_regs": m * k * ab * DFF,
        "weight_regs": n * k * ab * DFF,             # dequantized weights
        "dequant": n * k * (mul_ge(a) + add),
        "out_regs": m * n * acc_bits(acc) * DFF,
        "broadcast": (m * k * ab * n + n * k * ab * m) * BUF,
    }
    return ArrayModel("mac", m, n, k, a, w_bits, parts)


def dp4(kind: str, a: str = "f16") -> float:
    """Compute density (TFLOPs/mm²) of the bare DP4 units the paper's anchors describe."""
    if kind == "lut":
        ge = lut_pe_ge(4, a, max_bits=1, acc=ACC[a] if a != "f16" else "f16")
    else:
        ge = 4 * mul_ge(a) + 4 * (ADD_F16 if a.startswith("f") else adder_ge("s32"))
    return 8 * FREQ_GHZ * 1e9 / (ge * UM2_PER_GE * 1e-6) / 1e12


def shapes_with_volume(volume: int = 512, ks=(1, 2, 4, 8)) -> list[tuple[int, int, int]]:
    out = []
    for k in ks:
        mn = volume // k
        m = 1
        while m <= mn:
            if mn % m == 0:
                out.append((m, mn // m, k))
            m *= 2
    return out
