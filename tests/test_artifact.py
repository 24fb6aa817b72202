"""Standalone artifacts: save, load in a fresh process without the compiler, identical outputs, and clear
refusals of corrupt, truncated, mismatched or foreign artifacts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lutc
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.runtime.artifact import ArtifactError
from models import saved_decoder

SPEC = LlamaSpec(vocab_size=89, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
                 max_positions=32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return saved_decoder(tmp_path_factory.mktemp("art") / "model", SPEC, seed=3, bits=2, group_size=32)


def _pasts(batch=1):
    return {f"past_{k}.{i}": np.zeros((batch, 2, 0, 16), np.float32) for i in range(2) for k in "kv"}


def test_layout_and_manifest(saved):
    _, path = saved
    names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {"manifest.json", "weights.safetensors", "lib/libtvm_runtime.so"} <= names
    assert any(n.startswith("kernels/") and n.endswith(".so") for n in names)
    m = json.loads((path / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["target"] == "cpu" and m["isa"] in ("avx512", "avx2", "generic") and m["arch"] == "x86_64"
    assert set(m["files"]) == names - {"manifest.json"}
    assert m["program"]["free"] and m["program"]["luts"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_runs_in_a_fresh_process_without_the_compiler(saved, tmp_path):
    _fresh_process_equals(*saved, tmp_path)


def test_a_float16_lm_head_runs_in_a_fresh_process(tmp_path):
    """The default QuantConfig leaves the (tied) lm_head in float at float16: the artifact holds it as an F16 tensor,
    the loaded model's steps read it as such, and the outputs equal the compiled model's."""
    from safetensors import safe_open

    cm, path = saved_decoder(tmp_path / "model", SPEC, seed=4, bits=2, group_size=32, exclude=None)
    with safe_open(str(path / "weights.safetensors"), "np") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == np.float16
    steps = {s["kernel"] for s in json.loads((path / "manifest.json").read_text())["program"]["steps"]}
    assert {"linear_f16", "gather_f16"} <= steps
    _fresh_process_equals(cm, path, tmp_path)


def _fresh_process_equals(cm, path, tmp_path):
    ids = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 7))
    np.save(tmp_path / "ids.npy", ids)
    code = f"""
import sys, numpy as np
import lutc.runtime
m = lutc.runtime.load({str(path)!r})
ids = np.load({str(tmp_path / 'ids.npy')!r})
pasts = {{f"past_{{k}}.{{i}}": np.zeros((2, 2, 0, 16), np.float32) for i in range(2) for k in "kv"}}
outs = m.run(input_ids=ids, **pasts)
np.savez({str(tmp_path / 'out.npz')!r}, *outs)
heavy = sorted(x for x in sys.modules if x.split(".")[0] in ("tvm", "networkx", "sympy", "torch", "onnx")
               or x.startswith(("lutc.passes", "lutc.frontend", "lutc.ir", "lutc.codegen")))
print("HEAVY", heavy)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout
    got = np.load(tmp_path / "out.npz")
    want = cm.run(input_ids=ids, **_pasts(2))
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got[f"arr_{i}"], w)


def test_loaded_model_generates_like_the_compiled_one(saved):
    cm, path = saved
    rt = lutc.runtime.load(path)
    assert rt.generate([3, 1, 4, 1, 5], 8).tokens == cm.generate([3, 1, 4, 1, 5], 8).tokens
    with pytest.raises(ValueError, match="exceeds the model's context of 32"):
        rt.generate(list(range(30)), 8)
    with pytest.raises(ValueError, match="no tokenizer"):
        rt.generate("hello", 2)


def test_cli_run_streams_tokens_and_reports_speed(saved):
    cm, path = saved
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "run", str(path), "--ids", "3,1,4,1,5",
                          "--max-new-tokens", "6", "--ignore-eos"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [int(t) for t in out.stdout.split()] == cm.generate([3, 1, 4, 1, 5], 6).tokens
    assert "decode: 5 tokens" in out.stderr and "median step:" in out.stderr
    bad = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "run", str(path)], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "no tokenizer: pass --ids" in bad.stderr


def test_cli_inspect_summarizes_a_cpu_artifact(saved):
    _, path = saved
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "inspect", str(path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    m = json.loads((path / "manifest.json").read_text())
    assert f"ISA {m['isa']} ({m['arch']}), {m['threads']} threads" in out.stdout
    assert "decode steps: replayed from a bound plan" in out.stdout


def _copy(path, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def test_refuses_corrupt_weights(saved, tmp_path):
    p = _copy(saved[1], tmp_path)
    with open(p / "weights.safetensors", "r+b") as f:
        f.seek(-10, os.SEEK_END)
        tail = f.read(10)
        f.seek(-10, os.SEEK_END)
        f.write(bytes(b ^ 0xFF for b in tail))  # same size, different bytes
    with pytest.raises(ArtifactError, match="weights.safetensors does not match its checksum"):
        lutc.runtime.load(p)


def test_refuses_truncated_and_missing_files(saved, tmp_path):
    p = _copy(saved[1], tmp_path)
    lib = next((p / "kernels").iterdir())
    lib.write_bytes(lib.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="truncated"):
        lutc.runtime.load(p)
    lib.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        lutc.runtime.load(p)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format version 99"),
    (lambda m: m.update(lutc_version="9.0.0"), "built by lutc 9.0.0"),
    (lambda m: m.update(isa="avx1024"), "unknown ISA|lacks"),
    (lambda m: m.update(isa="neon", arch="aarch64"), "built for aarch64 .neon kernels.; this machine is x86_64"),
    (lambda m: m.update(isa="neon", arch=None), "neon instruction set, which this CPU lacks"),
    (lambda m: m.update(target="tpu"), "built for target 'tpu'"),
    (lambda m: m.update(format="something"), "not a lutc artifact"),
])
def test_refuses_mismatched_manifests(saved, tmp_path, edit, message):
    p = _copy(saved[1], tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    edit(m)
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises((ArtifactError, ValueError), match=message):
        lutc.runtime.load(p)


def test_reads_format_version_1_without_fused_residuals(tmp_path):
    """Version 1 artifacts (no LUT step with a residual input) still load and run; this lutc writes version 2."""
    g = build_llama(SPEC, random_llama_weights(SPEC, seed=3), kv_cache=True, last_logits=True)
    cm = lutc.compile(g, target="cpu", quant=lutc.QuantConfig(bits=2, group_size=32, exclude=()),
                      target_options={"fuse_residual": False})
    cm.save(tmp_path / "v1")
    m = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert m["format_version"] == 2
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps(dict(m, format_version=1)))
    ids = np.arange(4)[None] % SPEC.vocab_size
    for a, b in zip(lutc.runtime.load(tmp_path / "v1").run(input_ids=ids, **_pasts()), cm.run(input_ids=ids, **_pasts())):
        np.testing.assert_array_equal(a, b)


def test_refuses_garbage_and_non_artifacts(tmp_path):
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        lutc.runtime.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        lutc.runtime.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        lutc.runtime.load(tmp_path)


def test_save_replaces_atomically_and_keeps_the_old_one_on_failure(saved, tmp_path, monkeypatch):
    cm, _ = saved
    path = tmp_path / "m"
    cm.save(path)
    before = (path / "manifest.json").read_text()
    import lutc.runtime.artifact as art

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(art, "sha256", boom)
    with pytest.raises(OSError, match="disk full"):
        cm.save(path)
    assert (path / "manifest.json").read_text() == before  # the previous artifact is intact
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # and no temporary directory is left


def test_reference_target_cannot_save(tmp_path):
    g = build_llama(SPEC, random_llama_weights(SPEC))
    with pytest.raises(NotImplementedError, match="target='cpu'"):
        lutc.compile(g).save(tmp_path / "x")


def test_compiler_can_be_imported_after_an_artifact_ran(saved):
    """A session that runs an artifact (its bundled libtvm_runtime) and then compiles: TVM's runtime must be
    loaded once, or its global functions register twice and the process aborts."""
    _, path = saved
    code = f"""
import numpy as np
import lutc.runtime
m = lutc.runtime.load({str(path)!r})
pasts = {{f"past_{{k}}.{{i}}": np.zeros((1, 2, 0, 16), np.float32) for i in range(2) for k in "kv"}}
m.run(input_ids=np.array([[1, 2]]), **pasts)
import tvm, lutc
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
spec = LlamaSpec(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=2, num_kv_heads=1,
                 max_positions=16)
cm = lutc.compile(build_llama(spec, random_llama_weights(spec, seed=1)), target="cpu",
                  quant=lutc.QuantConfig(bits=2, group_size=32, exclude=()))
print("COMPILED", cm(np.array([[3, 4]]))[0].shape)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "COMPILED" in r.stdout


def test_refuses_kernels_this_host_lacks(saved, tmp_path, monkeypatch):
    """A model whose many-row LUT calls run the AMX or VNNI kernel, loaded where they cannot run: refused with the
    instructions and how many LUT kernels need them, before any of them runs."""
    p = _copy(saved[1], tmp_path)
    m = json.loads((p / "manifest.json").read_text())
    luts = m["program"]["luts"]
    for i, spec in enumerate(luts.values()):
        spec["params"]["schedule"][3]["kernel"] = "amx" if i == 0 else "vnni"
    (p / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr("lutc.runtime.lut.kernel_usable", lambda kernel: kernel == "lut")
    with pytest.raises(ArtifactError, match=f"{len(luts)} LUT kernels run Intel AMX tile instructions and AVX-512 VNNI"):
        lutc.runtime.load(p).run(input_ids=np.zeros((1, 3), np.int64), **_pasts())
