"""Constant folding of symbolic shape computations."""
import numpy as np

from lutc.codegen.reference.executor import run
from lutc.ir import Op, parse_graph, verify
from lutc.passes.fold import ConstantFolding

SHAPE_CHAIN = """
graph g(%x) {
  %x = input : f32[batch,seq,12]
  %s = shape(%x) : i64[3]
  %i = const {"value": [0, 1]} : i64[2]
  %bs = gather(%s, %i) {"axis": 0} : i64[2]
  %tail = const {"value": [3, 4]} : i64[2]
  %target = concat(%bs, %tail) {"axis": 0} : i64[4]
  %y = reshape(%x, %target) : f32[batch,seq,3,4]
  %one = const {"value": [1]} : i64[1]
  %minus = const {"value": [-1]} : i64[1]
  %seq = const {"value": [1]} : i64[1]
  %s1 = gather(%s, %seq) {"axis": 0} : i64[1]
  %is_one = equal(%s1, %one) : bool[1]
  %is_minus = equal(%s1, %minus) : bool[1]
  return y=%y, is_one=%is_one, is_minus=%is_minus
}
"""


def test_symbolic_shape_chain_folds_to_a_symbolic_constant():
    g = parse_graph(SHAPE_CHAIN)
    verify(g)
    x = np.random.default_rng(0).standard_normal((2, 5, 12)).astype(np.float32)
    before = run(g, [x])
    assert ConstantFolding()(g).changed
    verify(g)
    ops = g.op_counts()
    assert Op.SHAPE not in ops and Op.CONCAT not in ops and Op.GATHER not in ops
    target = g.node(g.node(g.outputs[0].node).inputs[1].node)
    assert target.attrs["value"] == ["batch", "seq", 3, 4]
    # seq == -1 is decidable (dims are positive), seq == 1 is not: it must stay a run-time comparison
    assert g.node(g.outputs[2].node).op is Op.CONST
    assert g.node(g.outputs[1].node).op is Op.EQUAL
    after = run(g, [x])
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    x1 = x[:, :1]
    assert run(g, [x1])[1].tolist() == [True]
