"""The CPU LUT tuner: candidates from rules, the disk cache (round trip without timing, keys, corrupt files),
schedules checked, and every schedule it can pick computing the same matmul."""
import dataclasses
import json

import numpy as np
import pytest

import lutc
from lutc.codegen.cpu import tune
from lutc.codegen.cpu.build import build_library
from lutc.codegen.cpu.isa import best_isa, supported
from lutc.codegen.cpu.kernel import kernel_params, library_params
from lutc.codegen.cpu.layout import pack_cpu
from lutc.codegen.cpu.schedule import BUCKET_NAMES, bucket_of, default_schedule
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.passes.quantize import LayerQuant
from lutc.runtime.isa import int8_kernels
from lutc.runtime.lut import LutKernel
from twins import amx_reference

RNG = np.random.default_rng(9)
KEY = tune.TuneKey(n=100, k=300, bits=2, group=64, bucket="33+", isa="avx512", threads=2, table="int8")


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A fresh tuning cache (kernel libraries stay in the shared cache), and the candidate timings so far."""
    def fresh(sub="kernels"):
        (tmp_path / sub).mkdir(exist_ok=True)
        return tmp_path / sub

    monkeypatch.setattr(tune, "cache_dir", fresh)
    monkeypatch.setattr(tune, "ROUNDS", 2)
    monkeypatch.setattr(tune, "FLUSH_MB", 1)
    calls = []
    real = tune.measure

    def measure(kernel, x, flush=None):
        calls.append(kernel.knobs)
        return real(kernel, x, flush)

    monkeypatch.setattr(tune, "measure", measure)
    return calls


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def weight(table="int8", bits=2):
    return lutc.quantize_weight(RNG.standard_normal((100, 300)), LayerQuant(bits=bits, group_size=64, table_dtype=table))


def test_candidates_come_from_rules():
    one = tune.candidates(dataclasses.replace(KEY, bucket="1"))
    assert one[0] == {"kernel": "lut", "threads": 2, "split": "n", "rows": 4, "mblock": 0, "tiles": 4}  # the heuristic
    assert {c["threads"] for c in one} == {1, 2} and {c["split"] for c in one} == {"n"}  # rows and split: no rule
    assert {c["tiles"] for c in one} == {1, 2, 4} and len(one) == 6  # tiles per pass: one row's knob
    avx2 = dataclasses.replace(KEY, bucket="1", isa="avx2")
    assert {c["tiles"] for c in tune.candidates(avx2)} == {1, 2}  # capped at what the kernel reads: no duplicates
    assert {c["tiles"] for c in tune.candidates(dataclasses.replace(avx2, bits=4))} == {1}
    assert {c["tiles"] for c in tune.candidates(dataclasses.replace(KEY, bucket="1", table="f32"))} == {1}
    many = tune.candidates(KEY)
    assert len(many) == len({json.dumps(c, sort_keys=True) for c in many}) > len(one)
    assert all(c["split"] == "n" for c in many if c["threads"] == 1)  # a split over one thread is no candidate
    assert {c["rows"] for c in many} == {1, 2, 4} and {c["mblock"] for c in many} == {0, 8, 16}
    assert {c["tiles"] for c in many} == {4}  # many rows: no tiles rule (a pass over several tiles is one row's)
    assert {c["rows"] for c in tune.candidates(dataclasses.replace(KEY, isa="avx2"))} == {1}
    assert {c["kernel"] for c in many} == {"lut"}  # no int8 candidates unless the key says they apply
    int8 = tune.candidates(dataclasses.replace(KEY, int8="amx,vnni"))
    assert int8[0]["kernel"] == "amx" and {c["kernel"] for c in int8} == {"lut", "amx", "vnni"}  # the best: default
    assert {c["rows"] for c in int8 if c["kernel"] != "lut"} == {1}  # no row passes there: one candidate per block
    vnni = dataclasses.replace(KEY, int8="vnni", bucket="9-32")  # a candidate at every width, the default from W3
    assert tune.candidates(vnni)[0]["kernel"] == "lut" and {c["kernel"] for c in tune.candidates(vnni)} == {"lut", "vnni"}
    assert tune.candidates(dataclasses.replace(vnni, bits=3))[0]["kernel"] == "vnni"
    assert tune.candidates(dataclasses.replace(vnni, bucket="33+"))[0]["kernel"] == "vnni"  # ... and W2 from 33 rows
    assert tune.candidates(dataclasses.replace(vnni, bucket="33+", bits=1))[0]["kernel"] == "lut"
    assert {c["kernel"] for c in tune.candidates(dataclasses.replace(KEY, int8="amx,vnni", bucket="2-8"))} == {"lut"}


def test_cache_round_trip_times_once(counted):
    q = weight()
    first = lutc.kernels.build_lut_matmul(q, m=1, threads=2, tune=True, progress=False)
    n = len(counted)
    assert n == tune.ROUNDS * len(tune.candidates(dataclasses.replace(KEY, bucket="1", isa=first.isa)))
    second = lutc.kernels.build_lut_matmul(q, m=1, threads=2, tune=True, progress=False)
    assert len(counted) == n  # read from the cache: nothing timed
    assert second.params["schedule"] == first.params["schedule"]
    default = kernel_params(pack_cpu(q), 2, first.isa)["schedule"]  # the heuristic (AMX from 9 rows where it can)
    assert second.params["schedule"][1:] == default[1:]  # other buckets untouched
    lutc.kernels.build_lut_matmul(q, m=5, threads=2, tune=True, progress=False)
    assert len(counted) > n  # another row bucket is another key


def test_choice_keeps_the_default_unless_clearly_faster():
    a, b, c = {"threads": 2}, {"threads": 1}, {"threads": 4}
    assert tune.choose([[a, 100.0], [b, 97.0], [c, 99.0]]) == a   # within the margin: noise
    assert tune.choose([[a, 100.0], [b, 90.0], [c, 94.0]]) == b
    assert tune.choose([[a, 100.0], [b, 120.0]]) == a


def test_cache_key_changes_with_every_input(monkeypatch, tmp_path):
    monkeypatch.setenv("LUTC_CACHE", str(tmp_path))
    base = tune.cache_path(KEY)
    assert base.parent == tmp_path / "tune"  # $LUTC_CACHE/tune
    assert tune.cache_path(dataclasses.replace(KEY)) == base
    changes = dict(n=101, k=304, bits=3, group=32, bucket="9-32", isa="avx2", threads=1, table="f32", int8="vnni",
                   cpu="GenuineIntel 6")
    paths = {tune.cache_path(dataclasses.replace(KEY, **{f: v})) for f, v in changes.items()}
    assert len(paths) == len(changes) and base not in paths
    monkeypatch.setattr(tune, "source_digest", lambda: "another compiler or kernel source")
    assert tune.cache_path(KEY) != base


def test_corrupt_cache_file_is_ignored_and_rewritten(counted):
    q = weight()
    kern = lutc.kernels.build_lut_matmul(q, m=1, threads=2, tune=True, progress=False)
    key = tune.key_for(pack_cpu(q), kern.params, 0)
    path = tune.cache_path(key)
    for junk in ("{not json", json.dumps({"key": dataclasses.asdict(key), "knobs": {"threads": "two"}}), "[]"):
        path.write_text(junk)
        before = len(counted)
        lutc.kernels.build_lut_matmul(q, m=1, threads=2, tune=True, progress=False)
        assert len(counted) > before  # timed again
        assert json.loads(path.read_text())["knobs"] in tune.candidates(key)  # and rewritten


@pytest.mark.parametrize("table", ["int8", "f32"])
def test_every_candidate_computes_the_same_matmul(table):
    """The tuning entry point under every knob combination the rules produce, for every row bucket."""
    q = weight(table, bits=3)
    cw = pack_cpu(q)
    params = kernel_params(cw, 2, best_isa(), table=table)
    lib = build_library({k: v for k, v in library_params(params).items() if k != "schedule"}, tune=True)
    kern = LutKernel(lib, params, cw.w, cw.scales, cw.zeros, entry="tune")
    tol = 2e-2 if table == "int8" else 1e-5  # int8 tables: ~1e-2 (design.md section 2); f32: rounding
    for m in (1, 3, 20, 37):
        x = RNG.standard_normal((m, q.k)).astype(np.float32)
        want = x.astype(np.float64) @ q.dequantize().astype(np.float64).T
        key = tune.TuneKey(q.n, q.k, 3, 64, BUCKET_NAMES[bucket_of(m)], params["isa"], 2, table)
        outs = []
        for c in tune.candidates(dataclasses.replace(key, bucket="33+")):
            kern.knobs = tune.knob_args(c)
            outs.append(kern(x))
            assert rel(outs[-1], want) < tol, c
        # same tables, same sums per row: schedules only move work between threads and passes
        assert max(rel(o, outs[0]) for o in outs) < 1e-6
        # the int8 candidates the library holds (the tuner's key lists int8_kernels(isa): an AVX-512 library has no
        # madd, whose knob there runs the lookups): their own numerics
        held = int8_kernels(params["isa"])
        if table == "int8" and held and m >= 9:
            for c in tune.candidates(dataclasses.replace(key, bucket="33+", int8=",".join(held))):
                if c["kernel"] != "lut":
                    kern.knobs = tune.knob_args(c)
                    assert rel(kern(x), amx_reference(q, x)) < 2e-6, c


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_every_tiles_per_pass_computes_the_same_gemv(isa, bits):
    """One row over 11 tiles (N = 700) split in 6 + 5 over two threads (or 11 on one): four tiles per pass leave
    remainders that pairs and single tiles finish; every count sums the same int8 lookups in the same order."""
    if not supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} kernels")
    q = lutc.quantize_weight(RNG.standard_normal((700, 300)), LayerQuant(bits=bits, group_size=64))
    cw = pack_cpu(q)
    params = kernel_params(cw, 2, isa)
    lib = build_library({k: v for k, v in library_params(params).items() if k != "schedule"}, tune=True)
    kern = LutKernel(lib, params, cw.w, cw.scales, cw.zeros, entry="tune")
    x = RNG.standard_normal((1, q.k)).astype(np.float32)
    want = x.astype(np.float64) @ q.dequantize().astype(np.float64).T
    for threads in (1, 2):
        outs = []
        for tiles in (1, 2, 4):
            kern.knobs = tune.knob_args(dict(params["schedule"][0], threads=threads, tiles=tiles))
            outs.append(kern(x))
            assert rel(outs[-1], want) < 2e-2, (threads, tiles)  # int8 tables: ~1e-2 (design.md section 2)
        assert all(np.array_equal(o, outs[0]) for o in outs), threads
    bad = [dict(b, tiles=3) for b in params["schedule"]]
    with pytest.raises(ValueError, match=r"tiles 1\|2\|4"):  # no pass reads three
        kernel_params(cw, 2, isa, schedule=bad)
    for threads in (1, 2):  # past the Python checks, the C kernel's refusal is an error too (from every task)
        kern.knobs = tune.knob_args(dict(params["schedule"][0], threads=threads, tiles=3))
        with pytest.raises(RuntimeError, match=f"lutc_gemv_{isa} returned an error.*tiles-per-pass"):
            kern(x)


def test_tuned_kernels_are_correct_and_schedules_checked(counted):
    for table in ("int8", "f32"):
        q = weight(table, bits=4)
        kern = lutc.kernels.build_lut_matmul(q, threads=2, tune=True, progress=False)  # every bucket
        tol = 2e-2 if table == "int8" else 1e-5
        for m in (1, 6, 30, 40):
            x = RNG.standard_normal((m, q.k)).astype(np.float32)
            assert rel(kern(x), x.astype(np.float64) @ q.dequantize().astype(np.float64).T) < tol
    cw = pack_cpu(q)
    with pytest.raises(ValueError, match="one knob dict per row bucket"):
        kernel_params(cw, 2, "generic", schedule=[{"threads": 1}])
    bad = default_schedule("generic", "int8", 2)
    bad[0] = dict(bad[0], threads=3)
    with pytest.raises(ValueError, match="bad schedule knobs"):
        kernel_params(cw, 2, "generic", schedule=bad)
    with pytest.raises(ValueError, match="table must be one of"):
        kernel_params(cw, 2, "generic", table="f16")


def test_cpu_option_tune_lowers_with_tuned_schedules(counted):
    spec = LlamaSpec(vocab_size=50, hidden_size=64, intermediate_size=96, num_layers=1, num_heads=4, num_kv_heads=2,
                     max_positions=16)
    g = build_llama(spec, random_llama_weights(spec, seed=2))
    quant = lutc.QuantConfig(bits=2, group_size=32)
    ids = np.arange(6)[None] % spec.vocab_size
    plain = lutc.compile(g, target="cpu", quant=quant, target_options={"threads": 2})
    tuned = lutc.compile(g, target="cpu", quant=quant, target_options={"threads": 2, "tune": True})
    assert counted  # candidates were timed
    shapes = {(s["params"]["n"], s["params"]["k"]) for s in tuned.executable.program.luts.values()}
    assert len(list(tune.cache_path(tune.TuneKey(1, 1, 2, 32, "1", "generic", 2, "int8")).parent.iterdir())) \
        == 4 * len(shapes)  # one cached choice per shape and row bucket
    np.testing.assert_allclose(tuned(ids), plain(ids), rtol=1e-5, atol=1e-5)


def test_last_level_cache_size_from_sysfs(tmp_path):
    """The flush size of the tuner and the benchmarks: the largest cache sysfs lists; unreadable entries skipped."""
    from lutc.runtime.isa import last_level_cache_bytes

    for index, size in (("index0", "48K"), ("index2", "2048K"), ("index3", "480M"), ("index4", "garbage")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert last_level_cache_bytes(root=tmp_path) == 480 << 20
    assert last_level_cache_bytes(default=123, root=tmp_path / "missing") == 123
    assert last_level_cache_bytes() > 0


def test_cpu_id_tells_core_generations_of_one_family_apart(tmp_path):
    """AMD family 25 is Zen 3 (AVX2) and Zen 4 (AVX-512): the tuner's key needs the model too, read from the "model"
    line, not "model name"."""
    from lutc.runtime.isa import cpu_id

    def fake(model: int):
        f = tmp_path / f"cpuinfo{model}"
        f.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
                     "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
        return f

    assert cpu_id(fake(1)) == "AuthenticAMD 25 1"
    assert cpu_id(fake(17)) == "AuthenticAMD 25 17"
    assert cpu_id(tmp_path / "missing") == ""
