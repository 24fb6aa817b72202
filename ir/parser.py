"""Parse the text form written by :mod:`lutc.ir.printer` back into a :class:`Graph`."""
from __future__ import annotations

import json
import re

import numpy as np

from .graph import Graph, Node, Ref
from .ops import Op
from .types import parse_type

_HEADER = re.compile(r"^graph\s+([\w.]+)\((.*)\)\s*\{$")
_NODE = re.compile(r"^%([\w.]+)\s*=\s*(\w+)")
_REF = re.compile(r"^%([\w.]+)(?::(\d+))?$")


class ParseError(ValueError):
    pass


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside of brackets and parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def parse_ref(text: str, lineno: int) -> Ref:
    m = _REF.match(text.strip())
    if not m:
        raise ParseError(f"line {lineno}: bad value reference {text!r}")
    return Ref(m.group(1), int(m.group(2) or 0))


def parse_graph(text: str, weights: dict[str, np.ndarray] | None = None) -> Graph:
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines:
        raise ParseError("empty text")
    lineno, head = lines[0]
    m = _HEADER.match(head)
    if not m:
        raise ParseError(f"line {lineno}: expected 'graph NAME(%inputs) {{', got {head!r}")
    g = Graph(m.group(1))
    g.weights = dict(weights or {})
    input_names = [parse_ref(s, lineno).node for s in split_top(m.group(2))]
    for lineno, ln in lines[1:]:
        if ln == "}":
            break
        if ln.startswith("return"):
            _parse_return(g, ln[len("return"):], lineno)
            continue
        if ln.startswith("meta "):
            try:
                g.meta = json.loads(ln[len("meta "):])
            except json.JSONDecodeError as e:
                raise ParseError(f"line {lineno}: bad meta JSON: {e}") from None
            continue
        _parse_node(g, ln, lineno)
    else:
        raise ParseError("missing closing '}'")
    g.inputs = input_names
    return g


def _parse_return(g: Graph, text: str, lineno: int) -> None:
    names, refs = [], []
    for part in split_top(text):
        name, eq, ref = part.partition("=")
        if not eq:
            raise ParseError(f"line {lineno}: outputs are written name=%ref, got {part!r}")
        names.append(name.strip())
        refs.append(parse_ref(ref, lineno))
    g.set_outputs(refs, names)


def _parse_node(g: Graph, ln: str, lineno: int) -> None:
    m = _NODE.match(ln)
    if not m:
        raise ParseError(f"line {lineno}: expected '%name = op...', got {ln!r}")
    name, opname = m.groups()
    try:
        op = Op(opname)
    except ValueError:
        raise ParseError(f"line {lineno}: unknown op {opname!r}") from None
    rest = ln[m.end():]
    inputs: list[Ref] = []
    if rest.startswith("("):
        close = rest.index(")")
        inputs = [parse_ref(s, lineno) for s in split_top(rest[1:close])]
        rest = rest[close + 1:]
    rest = rest.lstrip()
    attrs = {}
    if rest.startswith("{"):
        try:
            attrs, end = json.JSONDecoder().raw_decode(rest)
        except json.JSONDecodeError as e:
            raise ParseError(f"line {lineno}: bad attributes: {e}") from None
        rest = rest[end:].lstrip()
    if not rest.startswith(":"):
        raise ParseError(f"line {lineno}: expected ': type' after node {name}")
    types_text = rest[1:].strip()
    if types_text.startswith("("):
        types_text = types_text[1:-1]
    try:
        types = [parse_type(t) for t in split_top(types_text)]
    except (ValueError, KeyError) as e:
        raise ParseError(f"line {lineno}: bad type {types_text!r}: {e}") from None
    if name in g:
        raise ParseError(f"line {lineno}: node {name} defined twice")
    for r in inputs:
        if r.node not in g:
            raise ParseError(f"line {lineno}: {r} used before it is defined")
    node = Node(name, op, inputs, attrs, types)
    g.nx.add_node(name, node=node, order=g._order)
    g._order += 1
    for r in inputs:
        g.nx.add_edge(r.node, name)
