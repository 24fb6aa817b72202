"""Run a graph with the numpy kernels: binds symbolic dims from the inputs, frees values after last use."""
from __future__ import annotations

import numpy as np

from ...ir import dims as D
from ...ir.graph import Graph, Ref
from ...ir.ops import Op
from ...runtime.program import InputError, bind_inputs as _bind  # noqa: F401 (InputError re-exported)
from .kernels import KERNELS


def bind_inputs(g: Graph, inputs) -> tuple[list[np.ndarray], dict[str, int]]:
    """Check inputs against the graph's input types and bind its symbolic dims to sizes."""
    return _bind(g.input_specs(), inputs)


class Executor:
    """Interprets a graph. ``float_dtype=np.float64`` runs every float op in double precision."""

    def __init__(self, g: Graph, float_dtype=None, observer=None):
        """``observer(node, outputs, inputs)`` sees every computed node (calibration uses it)."""
        self.g = g
        self.float_dtype = float_dtype
        self.observer = observer
        self.order = [n for n in g.nodes() if n.op is not Op.INPUT]
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.order):
            for r in n.inputs:
                last_use[r.node] = i
        keep = {r.node for r in g.outputs}
        self.free_after: list[list[str]] = [[] for _ in self.order]
        for name, i in last_use.items():
            if name not in keep:
                self.free_after[i].append(name)

    def _cast(self, x: np.ndarray) -> np.ndarray:
        if self.float_dtype is not None and x.dtype.kind == "f":
            return x.astype(self.float_dtype)
        return x

    def __call__(self, inputs) -> list[np.ndarray]:
        arrays, env = bind_inputs(self.g, inputs)
        values: dict[str, list[np.ndarray]] = {n: [self._cast(a)] for n, a in zip(self.g.inputs, arrays)}

        def dim(d):
            return D.evaluate(d, env) if isinstance(d, str) else (int(d) if not isinstance(d, (int, float)) else d)

        for i, node in enumerate(self.order):
            if node.op is Op.CONST:
                values[node.name] = [self._cast(self.const(node.out, dim))]
            else:
                ins = [values[r.node][r.index] for r in node.inputs]
                try:
                    out = KERNELS[node.op](node.attrs, ins, dim)
                except Exception as e:
                    raise type(e)(f"{node.op.value} {node.name}: {e}") from e
                values[node.name] = out if isinstance(out, list) else [np.asarray(out)]
                if self.observer is not None:
                    self.observer(node, values[node.name], ins)
            for name in self.free_after[i]:
                del values[name]
        return [values[r.node][r.index] for r in self.g.outputs]

    def const(self, ref: Ref, dim) -> np.ndarray:
        v = self.g.const_value(ref)
        if v.dtype == object:  # a symbolic shape value
            t = self.g.type_of(ref)
            return np.asarray([dim(x) for x in v.reshape(-1).tolist()], t.dtype.to_numpy()).reshape(v.shape)
        return v


def run(g: Graph, inputs, float_dtype=None) -> list[np.ndarray]:
    return Executor(g, float_dtype)(inputs)
