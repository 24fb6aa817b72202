"""lutc.compile on the built-in model: targets, dumps, inputs, CLI."""
import subprocess
import sys

import numpy as np
import pytest

import lutc
from lutc.codegen import UnknownTargetError, get_target
from lutc.codegen.reference.executor import InputError, run
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.ir import parse_graph

SPEC = LlamaSpec(vocab_size=53, hidden_size=36, intermediate_size=50, num_layers=2, num_heads=3, num_kv_heads=1,
                 max_positions=32)


@pytest.fixture(scope="module")
def graph():
    return build_llama(SPEC, random_llama_weights(SPEC, seed=5))


def test_compile_reference_matches_float64_and_dumps(graph, tmp_path):
    cm = lutc.compile(graph, dump_ir=tmp_path)
    ids = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 11))
    ref = run(graph, [ids], float_dtype=np.float64)[0]
    out = cm(ids)
    assert out.shape == (2, 11, SPEC.vocab_size) and out.dtype == np.float32
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-5
    assert cm(input_ids=ids[:, :4]).shape == (2, 4, SPEC.vocab_size)
    dumps = sorted(tmp_path.glob("*.txt"))
    assert dumps[0].name == "000_import.txt" and dumps[-1].name.endswith("_dce.txt")
    assert parse_graph(dumps[-1].read_text(), cm.graph.weights).structurally_equal(cm.graph)
    assert "sdpa" in cm.ir and "rms_norm" in cm.summary()


def test_targets(graph):
    assert {"reference", "cpu", "cuda", "lut-sim"} <= set(lutc.known_targets())
    with pytest.raises(UnknownTargetError, match="known targets: .*'reference'"):
        lutc.compile(graph, target="tpu")
    assert get_target("cuda", arch="sm_80").options.arch == "sm_80"   # compiles without a GPU (tests/codegen)
    with pytest.raises(TypeError, match="unexpected keyword"):
        lutc.compile(graph, target="cpu", target_options={"thread": 2})
    with pytest.raises(TypeError, match="a name or a target object"):
        lutc.compile(graph, target=3)
    with pytest.raises(TypeError, match="lutc.QuantConfig"):
        lutc.compile(graph, quant=object())


def test_bad_inputs_give_clear_errors(graph):
    cm = lutc.compile(graph)
    with pytest.raises(InputError, match="rank 2"):
        cm(np.zeros(5, np.int64))
    with pytest.raises(InputError, match="expected i64"):
        cm(np.zeros((1, 5), np.float32))
    with pytest.raises(TypeError, match="either by position or by name"):
        cm(np.zeros((1, 5), np.int64), input_ids=np.zeros((1, 5), np.int64))
    with pytest.raises(IndexError, match="out of range"):
        cm(np.full((1, 3), SPEC.vocab_size, np.int64))
    with pytest.raises(ValueError, match="cannot tell the format"):
        lutc.compile("model.bin")


def test_builder_matches_transformers():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=SPEC.vocab_size, hidden_size=SPEC.hidden_size, intermediate_size=SPEC.intermediate_size,
                      num_hidden_layers=SPEC.num_layers, num_attention_heads=SPEC.num_heads,
                      num_key_value_heads=SPEC.num_kv_heads, max_position_embeddings=SPEC.max_positions,
                      rms_norm_eps=SPEC.rms_norm_eps, tie_word_embeddings=True)
    assert LlamaSpec.from_hf(cfg) == SPEC
    weights = random_llama_weights(SPEC, seed=9)
    model = LlamaForCausalLM(cfg).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    ids = np.random.default_rng(1).integers(0, SPEC.vocab_size, (2, 13))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    got = lutc.compile(build_llama(SPEC, weights))(ids)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5


def test_cli_inspect_demo(tmp_path):
    dot = tmp_path / "g.dot"
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "inspect", "demo", "--canonical", "--dot", str(dot)],
                         capture_output=True, text=True, check=True).stdout
    assert "graph llama" in out and "sdpa" in out and dot.read_text().startswith("digraph")
    bad = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "inspect", "x.bin"], capture_output=True, text=True)
    assert bad.returncode == 2 and "cannot tell the format" in bad.stderr


def test_cli_compile_float_dtype(tmp_path):
    """``lutc compile --bits`` keeps the float lm_head at float16 unless ``--float-dtype float32``."""
    import json

    kinds = {}
    for dt in ("float16", "float32"):
        out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "compile", "demo", "--bits", "2",
                              "--group-size", "32", "--float-dtype", dt, "-o", str(tmp_path / dt)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        steps = json.loads((tmp_path / dt / "manifest.json").read_text())["program"]["steps"]
        kinds[dt] = {s["kernel"] for s in steps}
    assert "linear_f16" in kinds["float16"] and "linear" not in kinds["float16"]
    assert "linear" in kinds["float32"] and "linear_f16" not in kinds["float32"]
