"""The graph IR: a networkx DiGraph of typed op nodes, weights stored once by reference."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import networkx as nx
import numpy as np

from .ops import Op
from .types import DType, TensorType

# Constants with at most this many elements are kept inline (readable, foldable); larger ones are weights.
INLINE_CONST_LIMIT = 16
_NAME_OK = re.compile(r"[^A-Za-z0-9_.]")


@dataclass(frozen=True)
class Ref:
    """Output ``index`` of node ``node``."""
    node: str
    index: int = 0

    def __str__(self) -> str:
        return f"%{self.node}" if self.index == 0 else f"%{self.node}:{self.index}"


@dataclass
class Node:
    name: str
    op: Op
    inputs: list[Ref]
    attrs: dict = field(default_factory=dict)
    types: list[TensorType] = field(default_factory=list)

    @property
    def type(self) -> TensorType:
        if len(self.types) != 1:
            raise ValueError(f"node {self.name} ({self.op.value}) has {len(self.types)} outputs")
        return self.types[0]

    @property
    def out(self) -> Ref:
        return Ref(self.name, 0)

    def __repr__(self) -> str:
        from .printer import format_node

        return format_node(self)


class Graph:
    """A DAG of :class:`Node` keyed by name. ``weights`` holds large constants, referenced by key."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.nx = nx.DiGraph()
        self.weights: dict[str, np.ndarray] = {}
        self.inputs: list[str] = []
        self.outputs: list[Ref] = []
        self.output_names: list[str] = []
        self.meta: dict = {}  # model facts passes keep and backends read (e.g. max_positions), JSON values
        self._order = 0

    # -- construction -------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        base = _NAME_OK.sub("_", base.lstrip("%/")) or "v"
        if base[0].isdigit():
            base = "v" + base
        name, i = base, 1
        while name in self.nx:
            name, i = f"{base}_{i}", i + 1
        return name

    def add(self, op: Op, inputs: Iterable[Ref] = (), attrs: dict | None = None,
            types: Iterable[TensorType] | TensorType | None = None, name: str | None = None) -> Node:
        if isinstance(types, TensorType):
            types = [types]
        node = Node(self.fresh_name(name or op.value), op, list(inputs), dict(attrs or {}), list(types or []))
        for r in node.inputs:
            if r.node not in self.nx:
                raise KeyError(f"node {node.name}: input {r} does not exist")
        self.nx.add_node(node.name, node=node, order=self._order)
        self._order += 1
        for r in node.inputs:
            self.nx.add_edge(r.node, node.name)
        return node

    def add_input(self, name: str, ttype: TensorType) -> Node:
        node = self.add(Op.INPUT, [], {}, ttype, name=name)
        self.inputs.append(node.name)
        return node

    def add_const(self, value, dtype: DType | None = None, name: str | None = None,
                  weight_key: str | None = None) -> Node:
        """A constant. Small ones are inline (``value`` attr, may hold symbolic dims as str);
        large ones go to ``weights`` under ``weight_key``. An existing key is reused, not copied."""
        if weight_key is not None and weight_key in self.weights:
            arr = self.weights[weight_key]
            return self.add(Op.CONST, [], {"ref": weight_key}, TensorType(DType.from_numpy(arr.dtype), arr.shape),
                            name=name or weight_key)
        arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if arr.dtype == object:  # symbolic shape values
            dtype = dtype or DType.i64
            return self.add(Op.CONST, [], {"value": arr.tolist()}, TensorType(dtype, arr.shape), name=name)
        if dtype is not None:
            arr = arr.astype(dtype.to_numpy())
        ttype = TensorType(DType.from_numpy(arr.dtype), arr.shape)
        if arr.size <= INLINE_CONST_LIMIT and weight_key is None:
            return self.add(Op.CONST, [], {"value": arr.tolist()}, ttype, name=name)
        key = weight_key or self.fresh_weight_key(name or "const")
        self.weights[key] = arr
        return self.add(Op.CONST, [], {"ref": key}, ttype, name=name or key)

    def fresh_weight_key(self, base: str) -> str:
        key, i = base, 1
        while key in self.weights:
            key, i = f"{base}_{i}", i + 1
        return key

    def set_outputs(self, refs: Iterable[Ref], names: Iterable[str] | None = None) -> None:
        self.outputs = list(refs)
        self.output_names = list(names) if names is not None else [f"out{i}" for i in range(len(self.outputs))]

    # -- queries ------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.nx.nodes[name]["node"]

    def __contains__(self, name: str) -> bool:
        return name in self.nx

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def type_of(self, ref: Ref) -> TensorType:
        return self.node(ref.node).types[ref.index]

    def nodes(self) -> list[Node]:
        """Nodes in a stable topological order (ties broken by insertion order)."""
        order = self.nx.nodes
        names = nx.lexicographical_topological_sort(self.nx, key=lambda n: order[n]["order"])
        return [order[n]["node"] for n in names]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes())

    def users(self, name: str) -> list[Node]:
        return [self.node(s) for s in self.nx.successors(name)]

    def uses(self, ref: Ref) -> list[tuple[Node, int]]:
        """(user, input position) for every use of ``ref``, outputs excluded."""
        return [(u, i) for u in self.users(ref.node) for i, r in enumerate(u.inputs) if r == ref]

    def input_specs(self) -> list[dict]:
        """The inputs as ``{"name", "dtype", "shape"}`` dicts: what the runtime checks inputs against."""
        return [{"name": n, "dtype": self.node(n).type.dtype.value, "shape": list(self.node(n).type.shape)}
                for n in self.inputs]

    def is_output(self, ref: Ref) -> bool:
        return ref in self.outputs

    def const_value(self, ref: Ref) -> np.ndarray | None:
        """The value of a CONST (numpy; object dtype when symbolic), else None."""
        node = self.node(ref.node)
        if node.op is not Op.CONST:
            return None
        if "ref" in node.attrs:
            return self.weights[node.attrs["ref"]]
        v = node.attrs["value"]
        flat = np.asarray(v, dtype=object).reshape(-1)
        if any(isinstance(x, str) for x in flat):
            return np.asarray(v, dtype=object).reshape(node.type.shape)
        return np.asarray(v, dtype=node.type.dtype.to_numpy()).reshape(node.type.shape)

    def op_counts(self) -> dict[Op, int]:
        counts: dict[Op, int] = {}
        for n in self.nodes():
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    # -- mutation -----------------------------------------------------------------------------
    def set_inputs(self, node: Node, inputs: list[Ref]) -> None:
        for r in node.inputs:
            if self.nx.has_edge(r.node, node.name):
                self.nx.remove_edge(r.node, node.name)
        node.inputs = list(inputs)
        for r in node.inputs:
            self.nx.add_edge(r.node, node.name)

    def replace_uses(self, old: Ref, new: Ref) -> None:
        """Point every use of ``old`` (graph outputs included) at ``new``."""
        for user in self.users(old.node):
            if any(r == old for r in user.inputs):
                self.set_inputs(user, [new if r == old else r for r in user.inputs])
        self.outputs = [new if r == old else r for r in self.outputs]

    def remove(self, name: str) -> None:
        if any(r.node == name for r in self.outputs) or next(self.nx.successors(name), None) is not None:
            raise ValueError(f"cannot remove {name}: it is still used")
        self.nx.remove_node(name)
        if name in self.inputs:
            self.inputs.remove(name)

    def copy(self) -> "Graph":
        """A deep copy of the structure; weight arrays are shared (they are never mutated in place)."""
        g = Graph(self.name)
        g.nx = nx.DiGraph()
        for n, data in self.nx.nodes(data=True):
            g.nx.add_node(n, node=copy.deepcopy(data["node"]), order=data["order"])
        g.nx.add_edges_from(self.nx.edges)
        g.weights = dict(self.weights)
        g.inputs, g.outputs, g.output_names = list(self.inputs), list(self.outputs), list(self.output_names)
        g.meta = dict(self.meta)
        g._order = self._order
        return g

    def structurally_equal(self, other: "Graph") -> bool:
        return self.describe() == other.describe()

    def describe(self) -> tuple:
        """Everything but weight data, in topological order: what structural equality compares."""
        nodes = tuple((n.name, n.op, tuple(n.inputs), _freeze(n.attrs), tuple(n.types)) for n in self.nodes())
        weights = tuple(sorted((k, v.dtype.str, v.shape) for k, v in self.weights.items()))
        return (self.name, tuple(self.inputs), tuple(self.outputs), tuple(self.output_names), nodes, weights)

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, float) and v != v:
        return "nan"
    return v
