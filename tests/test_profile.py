"""The step profiler of loaded models (runtime/profile.py): every step of a profiled call is timed once, by phase
and kernel, the shares add up, and profiling changes neither the outputs nor the replay after it."""
import subprocess
import sys

import numpy as np
import pytest

import lutc
from lutc.frontend.llama import LlamaSpec
from lutc.runtime.profile import Profile, phase_of
from models import saved_decoder

SPEC = LlamaSpec(vocab_size=71, hidden_size=64, intermediate_size=80, num_layers=3, num_heads=4, num_kv_heads=2,
                 max_positions=48)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return saved_decoder(tmp_path_factory.mktemp("prof") / "model", SPEC, seed=5, bits=3, group_size=32)[1]


def test_profile_times_every_step_of_prefill_and_decode(artifact):
    rt = lutc.runtime.load(artifact)
    plain = rt.generate([5, 9, 2, 6], 7).tokens
    with rt.profile() as prof:
        profiled = rt.generate([5, 9, 2, 6], 7).tokens
    assert profiled == plain
    assert rt.interpreter.profile is None and rt.generate([5, 9, 2, 6], 7).tokens == plain   # replayed again
    report = prof.report()
    assert set(report) == {"prefill", "decode"}
    assert report["prefill"]["calls"] == 1 and report["decode"]["calls"] == 6
    steps = rt.program.steps
    for ph in report.values():
        counts = {r["step"]: r["calls_per_call"] for r in ph["rows"]}
        # each step of the program once per call: LUT steps by shape, the others by kernel
        assert sum(counts.values()) == len(steps)
        assert sum(v for k, v in counts.items() if k.startswith("lut ")) == sum(s.kernel == "lut" for s in steps)
        assert counts["rope_kv_attention"] == SPEC.num_layers
        assert 0 < ph["steps_ms_per_call"] <= ph["ms_per_call"]
        assert sum(r["share"] for r in ph["rows"]) == pytest.approx(ph["steps_ms_per_call"] / ph["ms_per_call"])
        assert all(r["gb_per_s"] > 0 for r in ph["rows"] if r["step"].startswith("lut "))
        assert all(r["gb_per_s"] is None for r in ph["rows"] if not r["step"].startswith("lut "))
    # the three layers' q/k/v matmuls (64 -> 64 + 2 * 32 outputs, after the fused norm) share one row
    assert any(r["step"] == "lut 128x64 W3 +rms_norm" and r["calls_per_call"] == 3 for r in report["decode"]["rows"])
    text = prof.table()
    assert "prefill: 1 calls" in text and "decode: 6 calls" in text and "rope_kv_attention" in text


def test_replayed_profile_times_the_bound_calls(artifact):
    """Decode steps replay as unprofiled: the first of a shape runs eagerly and the next binds the plan (both
    untimed), the rest replay their bound calls, each timed; view-only steps have no call."""
    rt = lutc.runtime.load(artifact)
    plain = rt.generate([5, 9, 2, 6], 7).tokens
    replays = rt.interpreter.replay.replays
    with rt.profile(replayed=True) as prof:
        assert rt.generate([5, 9, 2, 6], 7).tokens == plain
    assert rt.interpreter.replay.replays > replays
    report = prof.report()
    assert {k: v["calls"] for k, v in report.items()} == {"prefill": 1, "untimed steps": 2, "decode (replayed)": 4}
    counts = {r["step"]: r["calls_per_call"] for r in report["decode (replayed)"]["rows"]}
    steps = rt.program.steps
    assert sum(v for k, v in counts.items() if k.startswith("lut ")) == sum(s.kernel == "lut" for s in steps)
    assert counts["rope_kv_attention"] == SPEC.num_layers and sum(counts.values()) < len(steps)
    assert "no steps to time" in prof.table()


def test_profile_phases_and_an_empty_profile():
    assert phase_of({"batch": 1, "seq": 1, "past": 9}) == "decode"
    assert phase_of({"batch": 1, "seq": 12, "past": 0}) == "prefill"
    assert phase_of({"n": 3}) == "call"
    assert Profile().table() == "no calls were profiled" and Profile().report() == {}


def test_cli_run_profile_prints_the_table(artifact):
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "run", str(artifact), "--ids", "3,1,4",
                          "--max-new-tokens", "4", "--ignore-eos", "--profile"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 4
    # 3 decode steps: the first eager, the second binds the replay, the third replays
    assert "decode (replayed): 1 calls" in out.stderr and "untimed steps: 2 calls" in out.stderr
    assert "lut 128x64 W3 +rms_norm" in out.stderr and "weights GB/s" in out.stderr
    eager = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "run", str(artifact), "--ids", "3,1,4",
                            "--max-new-tokens", "4", "--ignore-eos", "--profile", "--no-replay"], capture_output=True,
                           text=True, timeout=300)
    assert eager.returncode == 0, eager.stderr
    assert eager.stdout == out.stdout and "decode: 3 calls" in eager.stderr and "replayed" not in eager.stderr
