"""CPU decode steps replayed from a bound plan (runtime/replay.py): the same outputs as the eager interpreter,
step for step, through cache growth, branches, batches, the context limit and prompts run in chunks; and the
cases that stay eager, with their reasons."""
import numpy as np
import pytest

import lutc
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.runtime.program import Interpreter, Program, Step
from lutc.runtime.replay import MAX_ROWS, CpuReplay

SPEC = LlamaSpec(vocab_size=101, hidden_size=72, intermediate_size=104, num_layers=2, num_heads=6, num_kv_heads=2,
                 max_positions=40)
Q2 = lutc.QuantConfig(bits=2, group_size=32)


@pytest.fixture(scope="module")
def models():
    """The same W2 model compiled twice: replayed decode steps, and every step eager."""
    g = build_llama(SPEC, random_llama_weights(SPEC, seed=3), kv_cache=True)
    return (lutc.compile(g, target="cpu", quant=Q2),
            lutc.compile(g, target="cpu", quant=Q2, target_options={"replay": False}))


def pasts(batch=1):
    return {f"past_{k}.{i}": np.zeros((batch, SPEC.num_kv_heads, 0, SPEC.head_dim), np.float32)
            for i in range(SPEC.num_layers) for k in "kv"}


def feed_back(cm, outs):
    return {n.replace("present_", "past_"): v for n, v in zip(cm.graph.output_names, outs) if n.startswith("present")}


def replay_of(cm) -> CpuReplay:
    """The model's replay, as if new: a new cache buffer may land where an older one was, and the count of
    eager first steps would then depend on the allocator."""
    r = cm.executable.interpreter.replay
    r.appended.clear()
    r.bound = None
    r.forget()
    return r


def decode(cm, ids, prompt: int, outs=None):
    """Prefill ``prompt`` tokens, then one call per token; every call's outputs."""
    outs = outs or cm.run(input_ids=ids[:, :prompt], **pasts(ids.shape[0]))
    steps = [outs]
    for t in range(prompt, ids.shape[1]):
        steps.append(cm.run(input_ids=ids[:, t:t + 1], **feed_back(cm, steps[-1])))
    return steps


def assert_same(a, b):
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_replayed_steps_equal_eager_steps(models):
    replayed, eager = models
    ids = np.random.default_rng(0).integers(0, SPEC.vocab_size, (1, 17))
    r0 = replay_of(replayed)
    builds, replays = r0.builds, r0.replays
    for a, b in zip(decode(replayed, ids, 5), decode(eager, ids, 5)):
        assert_same(a, b)
    # prefill and the first decode step eager, the second builds the plan (and is its first replay)
    assert r0.blocker is None and r0.builds == builds + 1 and r0.replays == replays + 12 - 1
    assert eager.executable.interpreter.replay is None


def test_replayed_outputs_are_not_overwritten_and_presents_view_the_cache(models):
    replayed, _ = models
    ids = np.random.default_rng(1).integers(0, SPEC.vocab_size, (1, 10))
    steps = decode(replayed, ids, 4)
    kept = [o.copy() for o in steps[-2]]
    more = replayed.run(input_ids=ids[:, -1:], **feed_back(replayed, steps[-1]))
    assert_same(steps[-2], kept)   # logits copied out; presents: views of positions the next steps do not touch
    j = replayed.graph.output_names.index("present_k.1")
    assert more[j].shape[2] == 11 and np.shares_memory(more[j], steps[-1][j])


def test_branching_from_an_older_past(models):
    """Pasts that are not the last presents: eager, the held views intact, then replayed again."""
    replayed, eager = models
    ids = np.random.default_rng(2).integers(0, SPEC.vocab_size, (1, 12))
    a, b = decode(replayed, ids, 4), decode(eager, ids, 4)
    held = [o.copy() for o in a[-1]]
    other = np.asarray([[7]])
    got = replayed.run(input_ids=other, **feed_back(replayed, a[5]))    # back to position 9
    want = eager.run(input_ids=other, **feed_back(eager, b[5]))
    assert_same(got, want)
    assert_same(a[-1], held)
    again = replayed.run(input_ids=other, **feed_back(replayed, got))
    assert_same(again, eager.run(input_ids=other, **feed_back(eager, want)))


def test_cache_growth_rebuilds_and_the_context_limit_stays_a_clear_error(models):
    replayed, eager = models
    kv = replayed.executable.interpreter.kv
    kv.MIN_POSITIONS = 4   # buffers of 6, 14, 30, then the capacity of 40 positions: three moves while decoding
    try:
        ids = np.random.default_rng(3).integers(0, SPEC.vocab_size, (1, SPEC.max_positions))
        r = replay_of(replayed)
        builds = r.builds
        for a, b in zip(decode(replayed, ids, 3), decode(eager, ids, 3)):
            assert_same(a, b)
        assert r.builds == builds + 4 and r.blocker is None
        last = decode(replayed, ids, 3)[-1]
        with pytest.raises(ValueError, match="runs past the model's context"):
            replayed.run(input_ids=ids[:, :1], **feed_back(replayed, last))
    finally:
        del kv.MIN_POSITIONS


def test_batches_replay_and_long_chunks_stay_eager(models):
    replayed, eager = models
    ids = np.random.default_rng(4).integers(0, SPEC.vocab_size, (2, 9))
    for a, b in zip(decode(replayed, ids, 3), decode(eager, ids, 3)):
        assert_same(a, b)
    chunks = np.random.default_rng(5).integers(0, SPEC.vocab_size, (1, 3 * (MAX_ROWS + 1)))
    r = replay_of(replayed)
    builds = r.builds
    outs = [replayed.run(input_ids=chunks[:, :MAX_ROWS + 1], **pasts())]
    want = [eager.run(input_ids=chunks[:, :MAX_ROWS + 1], **pasts())]
    for c in (1, 2):
        part = chunks[:, c * (MAX_ROWS + 1):(c + 1) * (MAX_ROWS + 1)]
        outs.append(replayed.run(input_ids=part, **feed_back(replayed, outs[-1])))
        want.append(eager.run(input_ids=part, **feed_back(eager, want[-1])))
        assert_same(outs[-1], want[-1])
    assert r.builds == builds


def test_bad_token_ids_in_a_replayed_step_are_a_clear_error(models):
    replayed, _ = models
    ids = np.random.default_rng(6).integers(0, SPEC.vocab_size, (1, 8))
    r = replay_of(replayed)
    steps = decode(replayed, ids, 4)
    assert r.bound is not None
    with pytest.raises(IndexError, match="gather(_f16)? .*out of range"):
        replayed.run(input_ids=np.asarray([[SPEC.vocab_size]]), **feed_back(replayed, steps[-1]))
    good = replayed.run(input_ids=ids[:, -1:], **feed_back(replayed, steps[-1]))
    assert good[0].shape == (1, 1, SPEC.vocab_size)


def test_a_saved_artifact_replays(models, tmp_path):
    replayed, _ = models
    replayed.save(tmp_path / "m")
    rt, eager = lutc.runtime.load(tmp_path / "m"), lutc.runtime.load(tmp_path / "m", replay=False)
    prompt = [3, 1, 4, 1, 5]
    assert rt.generate(prompt, 12).tokens == eager.generate(prompt, 12).tokens
    assert rt.interpreter.replay.replays == 10 and eager.interpreter.replay is None


def _append_then_slice() -> Program:
    """A KV append, and a slice whose length grows with the cache (its result cannot keep a fixed buffer)."""
    inputs = [{"name": "new", "dtype": "f32", "shape": [1, 1, "seq", 2]},
              {"name": "past", "dtype": "f32", "shape": [1, 1, "past", 2]}]
    outputs = [{"name": "y", "value": "y"}, {"name": "present", "value": "present"}]
    steps = [Step("kv_append", ["past", "new"], ["present"], {"axis": 2}, "append"),
             Step("slice", ["table"], ["y"], {"starts": [0], "ends": ["past+seq"], "axes": [0]}, "grow")]
    return Program(inputs, outputs, {"table": {"value": np.arange(20.0).reshape(10, 2).tolist(), "dtype": "f32"}},
                   steps)


def _bind_append(attrs, ins, kv, cursor):
    past, new = ins
    buf = kv.owner(past)

    def call():
        buf[:, :, cursor.p:cursor.p + new.shape[2]] = new
    return call, [buf]


def test_a_result_that_changes_shape_drops_the_replay():
    program = _append_then_slice()
    interp = Interpreter(program, {}, {})
    interp.replay = r = CpuReplay(interp, {"kv_append": _bind_append})
    assert r.blocker is None
    past = np.zeros((1, 1, 0, 2), np.float32)
    for t in range(5):
        y, past = interp([np.full((1, 1, 1, 2), t, np.float32), past])
        np.testing.assert_array_equal(y, np.arange(20.0).reshape(10, 2)[:t + 1])
        np.testing.assert_array_equal(past[0, 0, :, 0], np.arange(t + 1))
    assert r.builds == 1 and "slice grow: its result is [4, 2] where the bound step had [3, 2]" in r.blocker


def test_programs_that_stay_eager_say_why():
    program = _append_then_slice()
    interp = Interpreter(program, {}, {})
    assert CpuReplay(interp).blocker == "kv_append append has no bound form"
    no_cache = Program(program.inputs[:1], program.outputs[:1], program.constants, program.steps[1:])
    assert CpuReplay(Interpreter(no_cache, {}, {})).blocker == "the program has no KV cache"
