"""Graph -> :class:`~lutc.runtime.program.Program` for the CPU: kernel selection as rules tried in order on
each node (each returns the steps it emits, or None when it does not apply), with the numpy kernel of the op
as the fallback that always works."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...ir.graph import Graph, Node, Ref
from ...ir.ops import Op
from ...passes.pattern import Match, Pat
from ...passes.quantize.config import LayerQuant
from ...passes.quantize.packing import unpack
from ...passes.quantize.weight import QuantizedWeight
from ...runtime.kernels import KERNELS
from ...runtime.program import Program, Step
from .build import build_library
from .kernel import TABLES, kernel_params, library_params
from .layout import pack_cpu
from .patterns import ATTENTION_BLOCK, HEADS, ROPE, SWIGLU


@dataclass(frozen=True)
class CpuOptions:
    """What the CPU backend may do: ``threads`` per kernel call, ``isa`` ("avx512", "avx2", "neon", "generic"; None:
    the best this CPU has), ``fuse_norm``: build tables straight from an RMSNorm in the LUT matmul call."""
    threads: int | None = None
    isa: str | None = None
    fuse_norm: bool = True
    share_tables: bool = True  # one LUT call per shared table (stacked weights) instead of one per consumer
    # attention/RoPE/SwiGLU through the TVM-built ops library instead of the vectorized numpy kernels of
    # runtime/fused.py: off by default, as its plain C loops are not faster yet (bench notes in README)
    compiled_ops: bool = False
    # a decoder layer's RoPE + KV-cache append + attention as one step (the ops library's C kernel)
    fuse_attention: bool = True
    fuse_swiglu: bool = True  # silu(gate) * up computed inside the down projection's LUT call
    fuse_residual: bool = True  # a residual add after a LUT matmul done by its step (one step and one copy less)
    progress: bool = False   # a progress bar over the kernel builds
    tune: bool = False       # time schedule candidates per LUT matmul shape (codegen/cpu/tune.py; cached on disk)
    replay: bool = True      # decode steps of the compiled model run from a bound plan (runtime/replay.py)


@dataclass
class Lowering:
    g: Graph
    options: CpuOptions
    threads: int
    isa: str
    steps: list[Step] = field(default_factory=list)
    constants: dict[str, dict] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    luts: dict[str, dict] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)   # library file name -> path in the kernel cache
    absorbed: set[str] = field(default_factory=set)            # nodes computed inside another node's step
    norms: dict[str, Node] = field(default_factory=dict)       # precompute -> the RMSNorm fused into its LUT call
    swiglus: dict[str, Node] = field(default_factory=dict)     # precompute -> the [gate | up] split of its SwiGLU
    positions: dict[str, int] = field(default_factory=dict)    # node -> index in the graph's order
    fused_adds: set[str] = field(default_factory=set)          # adds computed by an earlier LUT step
    half: set[str] = field(default_factory=set)                # float weights stored as float16 (_half_weight)

    def value(self, ref: Ref) -> str:
        return ref.node if ref.index == 0 else f"{ref.node}:{ref.index}"

    def shape(self, ref) -> tuple:
        return tuple(self.g.type_of(ref).shape)

    def position(self, name: str) -> int:
        if not self.positions:
            self.positions.update((n.name, i) for i, n in enumerate(self.g.nodes()))
        return self.positions[name]

    def only_user(self, node: Node) -> Node | None:
        users = self.g.users(node.name)
        outputs = {r.node for r in self.g.outputs}
        return users[0] if len(users) == 1 and node.name not in outputs else None


Rule = Callable[[Lowering, Node], "list[Step] | None"]

# Below this much weight per thread, handing work to a pool thread costs more than it saves. In a whole model
# the weights come cold from DRAM (SmolLM2 at 2 bits: 40 MB), where a second thread doubles the loads in
# flight: 576x576 W2 (96 kB) takes 16.5 us on one thread and 13.7 on two, 3072x576 (513 kB) 61.5 and 39.6
# (warm in L2 they are within 1 us). SmolLM2 W2 decode: 132 tok/s with one thread below 512 kB per thread,
# 162 with two threads for every matrix (same process, interleaved, 5 rounds).
BYTES_PER_THREAD = 32 << 10


def threads_for(weight_bytes: int, threads: int) -> int:
    """Threads for one LUT call: a tiny matrix streams in less time than handing half of it over takes."""
    return max(1, min(threads, weight_bytes // BYTES_PER_THREAD))


def _lut_operand(low: Lowering, node: Node) -> bool:
    """A packed weight, scale or zero point: the LUT step carries its own repacked copy."""
    uses = low.g.uses(node.out)
    return bool(uses) and all(u.op is Op.LUT_MATMUL and 3 <= i < 5 + bool(u.attrs.get("zero_point"))
                              for u, i in uses)


def _half_weight(low: Lowering, node: Node) -> bool:
    """A float weight with float16 values (passes/quantize/float_weights.py) that only linear layers (as their
    weight) and embedding gathers (as their table) read: stored as float16, read by the linear_f16 and gather_f16
    steps (half the bytes of a decode step's lm_head)."""
    from ...passes.quantize.float_weights import STORAGE

    uses = low.g.uses(node.out)
    return (node.attrs.get(STORAGE) == "float16" and bool(uses) and any(u.op is Op.LINEAR for u, _ in uses)
            and all((u.op is Op.LINEAR and i == 1) or (u.op is Op.GATHER and i == 0 and u.attrs.get("axis", 0) == 0)
                    for u, i in uses))


def _half_const(low: Lowering, node: Node) -> list[Step] | None:
    """The CPU target's float16 storage of a ``_half_weight`` (its linear_f16 and gather_f16 steps widen it)."""
    if node.op is not Op.CONST or "ref" not in node.attrs or not _half_weight(low, node):
        return None
    key = node.attrs["ref"]
    low.half.add(node.name)
    low.weights[key] = low.g.weights[key].astype(np.float16)   # exact: its values are float16 ones
    low.constants[node.name] = {"weight": key}
    return []


def _const(low: Lowering, node: Node) -> list[Step] | None:
    if node.op is not Op.CONST:
        return None
    if _lut_operand(low, node):
        return []
    if "ref" in node.attrs:
        key = node.attrs["ref"]
        low.weights[key] = low.g.weights[key]
        low.constants[node.name] = {"weight": key}
    else:
        v = node.attrs["value"]
        symbolic = any(isinstance(x, str) for x in np.asarray(v, dtype=object).reshape(-1).tolist())
        low.constants[node.name] = {"value": v, "dtype": node.type.dtype.value, "symbolic": symbolic}
    return []


def _input(low: Lowering, node: Node) -> list[Step] | None:
    return [] if node.op is Op.INPUT else None


def _absorbed_node(low: Lowering, node: Node) -> list[Step] | None:
    """A node computed inside another node's step (a fused group's inner node, a fused norm)."""
    return [] if node.name in low.absorbed else None


def _absorbed(low: Lowering, node: Node) -> list[Step] | None:
    """Precomputes (and fused norms) run inside the LUT matmul call that reads them."""
    if node.op is Op.LUT_PRECOMPUTE:
        if node.attrs["table_dtype"] not in TABLES or not node.attrs.get("symmetric_table", True):
            raise NotImplementedError(f"lut_precompute {node.name}: the CPU kernels build symmetrized {TABLES} "
                                      f"tables, not table_dtype={node.attrs['table_dtype']!r}")
        return []
    return _absorbed_node(low, node)


def _fused_norm(low: Lowering, pre: Node) -> Node | None:
    """The RMSNorm whose only consumer is this precompute, whose only consumer is one LUT matmul."""
    if not low.options.fuse_norm or low.only_user(pre) is None:
        return None
    norm = low.g.node(pre.inputs[0].node)
    if norm.op is not Op.RMS_NORM or len(norm.inputs) != 2 or low.only_user(norm) is None:
        return None
    w = low.g.node(norm.inputs[1].node)
    return norm if w.op is Op.CONST and "ref" in w.attrs and low.g.type_of(norm.out).dtype.value == "f32" else None


def _fused_swiglu(low: Lowering, pre: Node) -> tuple[Node, ...] | None:
    """(split, silu, mul) when this precompute (read by one LUT matmul) reads silu(gate) * up, gate and up the
    two equal halves of one split along the last axis that nothing else reads: the gate/up matmul's output."""
    if not low.options.fuse_swiglu or low.only_user(pre) is None:
        return None
    m = Match(low.g)
    if not SWIGLU.match(low.g, pre.inputs[0], m):
        return None
    gate, up, mul = m["gate"], m["up"], low.g.node(pre.inputs[0].node)
    split, silu = low.g.node(gate.node), low.g.node(mul.inputs[0].node if mul.inputs[1] == up else mul.inputs[1].node)
    if split.op is not Op.SPLIT or up.node != split.name or (gate.index, up.index) != (0, 1) or len(split.types) != 2:
        return None
    t = low.g.type_of(split.inputs[0])
    sizes = split.attrs.get("sizes")
    if t.dtype.value != "f32" or split.attrs.get("axis") not in (-1, t.rank - 1) or not sizes or len(sizes) != 2 \
            or not isinstance(sizes[0], int) or sizes[0] != sizes[1] or low.only_user(mul) is None \
            or low.only_user(silu) is None or any(len(low.g.uses(r)) != 1 for r in (gate, up)):
        return None
    return split, silu, mul


def _quantized_weight(low: Lowering, mm: Node) -> QuantizedWeight:
    a = mm.attrs
    arrays = [low.g.const_value(r) for r in mm.inputs[3:]]
    packed, scales = arrays[0], arrays[1]
    zeros = arrays[2] if a.get("zero_point") else None
    cfg = LayerQuant(bits="ternary" if a.get("ternary") else a["bits"], group_size=a["group_size"],
                     table_dtype=a.get("table_dtype", "int8"))
    return QuantizedWeight(unpack(packed), scales, zeros, cfg, a["k"])


def residual_add(low: Lowering, mm: Node) -> tuple[Node, Ref] | None:
    """(add, residual): the float32 add that is the only reader of this matmul's output, when its other
    operand has the same shape and is computed before the matmul (a decoder layer's residual connection)."""
    if not low.options.fuse_residual or mm.attrs.get("has_bias"):
        return None
    add = low.only_user(mm)
    if add is None or add.op is not Op.ADD or len(add.inputs) != 2 or add.name in low.absorbed:
        return None
    others = [r for r in add.inputs if r != mm.out]
    if len(others) != 1:
        return None
    (other,) = others
    f32 = all(low.g.type_of(r).dtype.value == "f32" for r in (other, mm.out, add.out))
    if not f32 or low.shape(other) != low.shape(mm.out):
        return None
    if other.node in low.fused_adds:   # the previous residual: its LUT step ran already
        return add, other
    if other.node in low.absorbed or low.position(other.node) > low.position(mm.name):
        return None   # computed inside a group step, or later than the matmul
    return add, other


def claim_residual(low: Lowering, fused: tuple[Node, Ref]) -> tuple[str, str]:
    """Claims the residual add ``residual_add`` found for a LUT step: (residual value, output value) of the step."""
    add, other = fused
    low.absorbed.add(add.name)
    low.fused_adds.add(add.name)
    return low.value(other), low.value(add.out)


def _lut_matmul(low: Lowering, mm: Node) -> list[Step] | None:
    if mm.op is not Op.LUT_MATMUL:
        return None
    pre = low.g.node(mm.inputs[0].node)
    norm, split = low.norms.get(pre.name), low.swiglus.get(pre.name)
    cw = pack_cpu(_quantized_weight(low, mm))
    prologue = ({"prologue": "rms_norm", "eps": norm.attrs.get("eps", 1e-6)} if norm is not None else
                {"prologue": "swiglu"} if split is not None else {})
    threads = low.threads if low.options.tune else threads_for(cw.nbytes, low.threads)  # tuned: measured
    params = kernel_params(cw, threads, low.isa, table=pre.attrs["table_dtype"], **prologue)
    if low.options.tune:
        from .tune import tuned_schedule

        params["schedule"] = tuned_schedule(cw, params, progress=low.options.progress)
    lib = build_library(library_params(params))
    lid = f"lut{len(low.luts)}"
    keys = [f"{mm.name}.cpu.{part}" for part in ("w", "scales", "zeros")]
    low.weights.update(zip(keys, (cw.w, cw.scales, cw.zeros)))
    low.luts[lid] = {"library": lib.name, "params": params, "weights": keys, "node": mm.name}
    low.libraries[lib.name] = str(lib)
    x = pre.inputs[0] if split is None else split.inputs[0]
    if norm is not None:
        low.absorbed.add(norm.name)
        key = low.g.node(norm.inputs[1].node).attrs["ref"]
        low.weights[key] = low.g.weights[key]
        low.luts[lid]["norm"] = key
        x = norm.inputs[0]
    residual = residual_add(low, mm)
    if residual is not None:   # y = residual + x @ W.T: the add done by the LUT step
        other, out = claim_residual(low, residual)
        low.luts[lid]["residual"] = True
        return [Step("lut", [low.value(x), other], [out], {"lut": lid}, mm.name)]
    out = low.value(mm.out)
    if not mm.attrs.get("has_bias"):
        return [Step("lut", [low.value(x)], [out], {"lut": lid}, mm.name)]
    bias = low.value(mm.inputs[-1])
    return [Step("lut", [low.value(x)], [out + ".nobias"], {"lut": lid}, mm.name),
            Step(Op.ADD.value, [out + ".nobias", bias], [out], {}, mm.name + "_bias")]


def _kv_append(low: Lowering, node: Node) -> list[Step] | None:
    """present = concat(past input, new, axis=2) returned as an output: appended in place at run time."""
    if node.op is not Op.CONCAT or len(node.inputs) != 2 or node.attrs.get("axis") not in (2, -2):
        return None
    past = low.g.node(node.inputs[0].node)
    if past.op is not Op.INPUT or node.type.rank != 4 or node.name not in {r.node for r in low.g.outputs}:
        return None
    return [Step("kv_append", [low.value(node.inputs[0]), low.value(node.inputs[1])], [node.name], {"axis": 2},
                 node.name)]


def _fused_step(kind: str, pattern: Pat, inputs: tuple[str, ...], attrs=lambda m: {}) -> Rule:
    """A rule that runs the nodes ``pattern`` matches as one ``kind`` step of runtime/fused.py, when every
    inner node feeds only this group (so none of them needs its own value)."""
    def apply(low: Lowering, node: Node) -> list[Step] | None:
        if node.op not in pattern.ops or len(node.types) != 1:
            return None
        m = Match(low.g)
        if not pattern.match(low.g, node.out, m):
            return None
        inner = _inner_nodes(low.g, node, {m[n].node for n in inputs})
        if any(low.only_user(low.g.node(n)) is None for n in inner):
            return None
        low.absorbed |= inner
        return [Step(kind, [low.value(m[n]) for n in inputs], [node.name], attrs(m), node.name)]
    apply.__name__ = kind
    return apply


def _inner_nodes(g: Graph, root: Node, leaves: set[str]) -> set[str]:
    inner, todo = set(), [root.name]
    while todo:
        for r in g.node(todo.pop()).inputs:
            if r.node not in leaves and r.node not in inner and g.node(r.node).op not in (Op.CONST, Op.INPUT):
                inner.add(r.node)
                todo.append(r.node)
    return inner


_rope = _fused_step("rope", ROPE, ("x", "cos", "sin"))
_swiglu = _fused_step("swiglu", SWIGLU, ("gate", "up"))


_VIEWS = frozenset({Op.RESHAPE, Op.TRANSPOSE, Op.SQUEEZE, Op.UNSQUEEZE})


def _view_spec(g: Graph, node: Node) -> dict | None:
    spec = {"op": node.op.value, "attrs": dict(node.attrs)}
    if node.op is Op.RESHAPE:
        shape = g.const_value(node.inputs[1])
        if shape is None:
            return None
        spec["shape"] = [d if isinstance(d, str) else int(d) for d in shape.reshape(-1).tolist()]
    return spec


def _views(low: Lowering, node: Node) -> list[Step] | None:
    """A chain of view ops (reshape -> transpose, ...) as one step: one interpreter dispatch, no copies."""
    if node.op not in _VIEWS:
        return None
    chain = [node]
    while True:
        src = low.g.node(chain[-1].inputs[0].node)
        if src.op not in _VIEWS or low.only_user(src) is None or src.name in low.absorbed:
            break
        chain.append(src)
    if len(chain) < 2:
        return None
    specs = [_view_spec(low.g, n) for n in reversed(chain)]
    if any(s is None for s in specs):
        return None
    low.absorbed |= {n.name for n in chain[1:]}
    return [Step("views", [low.value(chain[-1].inputs[0])], [node.name], {"ops": specs}, node.name)]


def _attention(low: Lowering, node: Node) -> list[Step] | None:
    if node.op is not Op.SDPA or len(node.inputs) != 3 or node.type.rank != 4:
        return None
    return [Step("attention", [low.value(r) for r in node.inputs], [node.name], dict(node.attrs), node.name)]


def _rope_kv_attention(low: Lowering, node: Node) -> list[Step] | None:
    """A decoder layer's attention block (patterns.ATTENTION_BLOCK: heads split, RoPE of q and k, the KV-cache
    appends, attention, heads merged) as one step: one pass from the projections' rows to the output rows."""
    if not low.options.fuse_attention or node.op is not Op.RESHAPE:
        return None
    g, m = low.g, Match(low.g)
    if not ATTENTION_BLOCK.match(g, node.out, m) or not all(HEADS[x].match(g, m[x], m) for x in HEADS):
        return None
    q4, k4 = g.type_of(m["xq"]), g.type_of(m["xk"])   # [b, heads, L, d]
    hq, hk, d, cos = q4.shape[1], k4.shape[1], q4.shape[3], g.type_of(m["cos"])
    if not all(isinstance(x, int) for x in (hq, hk, d)) or hq % hk or d % 2 or g.type_of(node.out).rank != 3 \
            or cos.rank != 2 or cos.shape[1] != d or g.type_of(m["sin"]).shape != cos.shape \
            or any(g.node(m[p].node).op is not Op.INPUT for p in ("past_k", "past_v")):
        return None
    presents = {m[p].node for p in ("present_k", "present_v")}
    outputs = {r.node for r in g.outputs}
    inner = _inner_nodes(g, node, {m[n].node for n in ("q", "k", "v", "cos", "sin", "past_k", "past_v")})
    if not presents <= outputs or any(u.name not in inner | {node.name} for n in inner for u in g.users(n)) \
            or (inner & outputs) - presents:
        return None
    low.absorbed |= inner
    sdpa = m.node("sdpa").attrs
    attrs = {"heads": hq, "kv_heads": hk, "head_dim": d, "scale": sdpa.get("scale") or 1 / float(np.sqrt(d)),
             "causal": bool(sdpa.get("causal")), "causal_align": sdpa.get("causal_align", "top_left")}
    ins = [low.value(m[n]) for n in ("q", "k", "v", "cos", "sin", "past_k", "past_v")]
    qkv = _qkv_split(low, [m[n] for n in ("q", "k", "v")])
    if qkv is not None:   # the block slices q, k, v out of the stacked projection's rows itself
        low.absorbed.add(qkv.name)
        attrs["qkv_sizes"] = list(qkv.attrs["sizes"])
        ins = [low.value(qkv.inputs[0])] + ins[3:]
    return [Step("rope_kv_attention", ins, [m[p].node for p in ("present_k", "present_v")] + [node.name], attrs,
                 node.name)]


def _qkv_split(low: Lowering, refs: list[Ref]) -> Node | None:
    """The split of the last axis whose outputs 0, 1, 2 are these q, k, v refs and are read by nothing else."""
    split = low.g.node(refs[0].node)
    sizes = split.attrs.get("sizes") or ()
    if split.op is not Op.SPLIT or refs != [Ref(split.name, i) for i in range(3)] or len(split.types) != 3 \
            or split.attrs.get("axis") not in (-1, low.g.type_of(split.inputs[0]).rank - 1) \
            or not all(isinstance(x, int) for x in sizes) or any(len(low.g.uses(r)) != 1 for r in refs):
        return None
    return split


def _half_reader(low: Lowering, node: Node) -> list[Step] | None:
    """A linear layer or gather over a float16-stored weight: its float16 step (float32 in and out)."""
    if node.op not in (Op.LINEAR, Op.GATHER) or node.inputs[1 if node.op is Op.LINEAR else 0].node not in low.half:
        return None
    return [Step(f"{node.op.value}_f16", [low.value(r) for r in node.inputs], [low.value(node.out)], dict(node.attrs),
                 node.name)]


def _numpy(low: Lowering, node: Node) -> list[Step]:
    if node.op.value not in KERNELS:
        raise NotImplementedError(f"{node.op.value} {node.name} has no CPU kernel; CPU kernels: {sorted(KERNELS)}")
    outs = [low.value(Ref(node.name, i)) for i in range(len(node.types))]
    return [Step(node.op.value, [low.value(r) for r in node.inputs], outs, dict(node.attrs), node.name)]


# Group rules claim the nodes of a fused group before any step is emitted (visited root-first, in reverse
# order, so the outermost match wins); node rules then pick each remaining node's kernel, in order.
GROUP_RULES: tuple[Rule, ...] = (_rope, _swiglu, _views)
CPU_GROUP_RULES: tuple[Rule, ...] = (_rope_kv_attention, *GROUP_RULES)
RULES: tuple[Rule, ...] = (_input, _half_const, _const, _absorbed, _lut_matmul, _kv_append, _attention, _half_reader)


def _claim_prologue(low: Lowering, node: Node) -> None:
    """An RMSNorm, or a SwiGLU over the halves of one split, read only by this precompute runs inside the LUT
    call after it (the precompute fused into its producer: the activation is read once)."""
    if node.op is not Op.LUT_PRECOMPUTE:
        return
    if (norm := _fused_norm(low, node)) is not None:
        low.norms[node.name] = norm
        low.absorbed.add(norm.name)
    elif (swiglu := _fused_swiglu(low, node)) is not None:
        low.swiglus[node.name] = swiglu[0]
        low.absorbed |= {n.name for n in swiglu}


def apply_rules(low: Lowering, group_rules, rules, fallback: Rule, label: str, claim=None) -> Program:
    """Group rules first (root-first, so the outermost match wins; ``claim`` sees each node before them),
    then each remaining node's first applicable rule, else ``fallback``: the program over ``low``'s state."""
    g = low.g
    nodes = g.nodes()
    planned: dict[str, list[Step]] = {}
    for node in reversed(nodes):
        if node.name in low.absorbed:
            continue
        if claim is not None:
            claim(low, node)
        for rule in group_rules:
            steps = rule(low, node)
            if steps is not None:
                planned[node.name] = steps
                break
    from ...passes.quantize.calibrate import progress

    for node in progress(nodes, label, low.options.progress):
        if node.name in planned:
            low.steps.extend(planned[node.name])
            continue
        for rule in rules:
            steps = rule(low, node)
            if steps is not None:
                break
        else:
            steps = fallback(low, node)
        low.steps.extend(steps)
    outputs = [{"name": name, "value": low.value(r)} for name, r in zip(g.output_names, g.outputs)]
    # constants only fused-away nodes read (reshape shapes inside a view chain or an attention block): dropped,
    # so the interpreter does not evaluate their symbolic dims on every call
    read = {v for s in low.steps for v in s.inputs} | {o["value"] for o in outputs}
    constants = {k: c for k, c in low.constants.items() if k in read}
    return Program(g.input_specs(), outputs, constants, low.steps, low.luts, dict(g.meta))


def lower(g: Graph, options: CpuOptions, threads: int, isa: str) -> tuple[Program, dict, dict]:
    """The program, the arrays it reads (by key) and the libraries it calls (file name -> path)."""
    low = Lowering(g, options, threads, isa)
    program = apply_rules(low, CPU_GROUP_RULES, RULES, _numpy, "building kernels", claim=_claim_prologue)
    return program, low.weights, low.libraries
