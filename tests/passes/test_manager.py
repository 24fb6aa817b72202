"""Pass manager contracts, verifier between passes, IR dump instrument."""
import numpy as np
import pytest

from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.ir import Op, parse_graph, verify
from lutc.passes.dce import DeadCodeElimination
from lutc.passes.instruments import DumpIR, PassTiming
from lutc.passes.manager import FunctionPass, PassContractError, PassManager
from lutc.passes.pipeline import canonicalize

SPEC = LlamaSpec(vocab_size=33, hidden_size=24, intermediate_size=40, num_layers=1, num_heads=3, num_kv_heads=1,
                 max_positions=16)


def graph():
    return build_llama(SPEC, random_llama_weights(SPEC))


def test_contracts_are_checked_before_running():
    needs = FunctionPass("needs_typed", lambda g: False, requires={"typed"})
    with pytest.raises(PassContractError, match="needs_typed requires \\['typed'\\]"):
        PassManager([needs])
    PassManager(canonicalize() + [needs])  # infer_shapes ensures "typed"


def test_dumps_are_numbered_parseable_and_respect_only_on_change(tmp_path):
    g = graph()
    PassManager(canonicalize(), [DumpIR(tmp_path / "all")]).run(g.copy())
    files = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert files == ["000_import.txt", "001_infer_shapes.txt", "002_fold.txt", "003_canonicalize.txt",
                     "004_fold.txt", "005_dce.txt"]
    for f in (tmp_path / "all").iterdir():
        verify(parse_graph(f.read_text(), g.weights))
    PassManager(canonicalize(), [DumpIR(tmp_path / "changed", only_on_change=True)]).run(g.copy())
    changed = sorted(p.name for p in (tmp_path / "changed").iterdir())
    assert changed[0] == "000_import.txt" and len(changed) < len(files)


def test_failure_dump_and_verifier_between_passes(tmp_path):
    def breaks_types(g):
        node = next(n for n in g.nodes() if n.op is Op.LINEAR)
        node.types = [node.type.with_shape((1, 2, 3))]
        return True

    pm = PassManager([FunctionPass("breaks_types", breaks_types)], [DumpIR(tmp_path)])
    with pytest.raises(ValueError, match="invalid graph"):
        pm.run(graph())
    assert (tmp_path / "001_breaks_types.failed.txt").exists()


def test_unchanged_pass_reports_no_change_and_timing():
    timing = PassTiming()
    g = PassManager(canonicalize(), [timing]).run(graph())
    assert not DeadCodeElimination()(g).changed
    assert [t[0] for t in timing.times] == ["infer_shapes", "fold", "canonicalize", "fold", "dce"]
    assert "canonicalize" in timing.report()
