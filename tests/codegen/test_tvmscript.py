"""codegen/tvmscript.py: TVM's macro lookup replaced by a frame walk gives the same parse, and is faster."""
import time

import numpy as np
import pytest

import lutc
from lutc.codegen import tvmscript
from lutc.passes.quantize import LayerQuant


def _parse(T):
    @T.macro
    def twice(A, i):
        A[i] = A[i] * T.float32(2)

    @T.macro
    def outer(A, i):
        twice(A, i)
        twice(A, i)

    @T.prim_func
    def main(a: T.handle):
        A = T.match_buffer(a, (16,), "float32")
        for i in range(16):
            outer(A, i)

    return main


def _cpu_driver():
    from lutc.codegen.cpu.build import _prim_funcs
    from lutc.codegen.cpu.kernel import kernel_params, library_params
    from lutc.codegen.cpu.layout import pack_cpu

    q = lutc.quantize_weight(np.random.default_rng(0).standard_normal((100, 300)), LayerQuant(bits=3, group_size=64))
    p = library_params(kernel_params(pack_cpu(q), 2, "avx512", prologue="rms_norm", eps=1e-5))
    return _prim_funcs(p, tune=True)


def _cuda_kernels():
    from lutc.codegen.cuda.mma import mma_matmul_func
    from lutc.codegen.cuda.tir import KernelParams, lut_matmul_func

    p = KernelParams(n=200, n_pad=256, k=300, chunks=3, bits=2, group_size=64, groups=5, has_zero=True, mt=1, cps=2)
    return {"lut": lut_matmul_func(p), "mma": mma_matmul_func(KernelParams(**{**p.as_dict(), "mt": 16, "kind": "mma"}))}


def _original(ScriptMacro):
    import inspect

    def find_parser_def(self):  # TVM 0.27's own lookup
        for finfo in inspect.getouterframes(inspect.currentframe()):
            parser = finfo.frame.f_globals.get(ScriptMacro.parser_object_name)
            if parser is not None:
                return parser
        raise RuntimeError("not available")

    return find_parser_def


@pytest.mark.parametrize("make", [lambda: {"main": _parse(tvmscript.T)}, _cpu_driver, _cuda_kernels],
                         ids=["nested macros", "cpu driver", "cuda kernels"])
def test_patched_macro_lookup_parses_the_same(monkeypatch, make):
    """The kernel generators' prim_funcs print the same with the frame walk as with TVM's inspect-based lookup."""
    tvmscript.T  # installs the frame walk
    from tvm.script.parser.core.parser import ScriptMacro

    assert ScriptMacro._find_parser_def.__module__ == tvmscript.__name__
    t0 = time.perf_counter()
    fast = {name: f.script() for name, f in make().items()}
    t_fast = time.perf_counter() - t0
    monkeypatch.setattr(ScriptMacro, "_find_parser_def", _original(ScriptMacro))
    t0 = time.perf_counter()
    slow = {name: f.script() for name, f in make().items()}
    t_slow = time.perf_counter() - t0
    assert fast == slow and all("T.prim_func" in s for s in fast.values())
    print(f"parse: {t_fast * 1e3:.0f} ms with the frame walk, {t_slow * 1e3:.0f} ms with inspect")


def test_patched_lookup_still_fails_outside_a_parse():
    T = tvmscript.T

    @T.macro
    def lone(A):
        A[0] = T.float32(0)

    with pytest.raises(RuntimeError, match="not available"):
        lone(None)
