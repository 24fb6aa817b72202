"""Symbolic dimension arithmetic. Dims are stored as ``int`` or ``str``; sympy does the algebra."""
from __future__ import annotations

import functools
import re

import sympy

from .types import Dim

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=4096)
def _sym_str(d: str) -> sympy.Expr:
    names = {n: sympy.Symbol(n, integer=True, positive=True) for n in _NAME.findall(d)
             if n not in ("floor", "ceiling", "Mod", "Max", "Min")}
    return sympy.sympify(d, locals=names)


def sym(d) -> sympy.Expr:
    if isinstance(d, sympy.Basic):
        return d
    if isinstance(d, (int,)):
        return sympy.Integer(d)
    if isinstance(d, str):
        return _sym_str(d)
    return sympy.Integer(int(d))


@functools.lru_cache(maxsize=16384)
def _simplify(e: sympy.Expr) -> sympy.Expr:  # shapes repeat once per layer: simplify each expression once
    return sympy.simplify(e)


def to_dim(e) -> Dim:
    e = _simplify(sym(e)) if not isinstance(e, (int, str)) else sym(e)
    if e.is_Integer:
        return int(e)
    return str(e).replace(" ", "")


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return to_dim(sym(a) + sym(b))


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    return to_dim(sym(a) - sym(b))


def mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return to_dim(sym(a) * sym(b))


def floordiv(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return to_dim(sympy.floor(sym(a) / sym(b)))  # integer symbols: floor(64*seq) simplifies to 64*seq


def prod(dims) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(out, d)
    return out


def equal(a: Dim, b: Dim) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return a == b or _simplify(sym(a) - sym(b)) == 0


def evaluate(d: Dim, env: dict[str, int]) -> int:
    """Value of a dim once the symbols are bound (``env`` maps symbol names to sizes)."""
    if isinstance(d, int):
        return d
    e = sym(d)
    missing = {s.name for s in e.free_symbols} - env.keys()
    if missing:
        raise ValueError(f"dim {d!r} uses unbound symbols {sorted(missing)}")
    return int(e.subs({s: env[s.name] for s in e.free_symbols}))


def symbols(d: Dim) -> set[str]:
    return set() if isinstance(d, int) else {s.name for s in sym(d).free_symbols}


def broadcast(a: tuple, b: tuple) -> tuple:
    """Numpy broadcasting on symbolic shapes; a symbolic dim against 1 wins, equal symbols match."""
    out = []
    for i in range(max(len(a), len(b))):
        x = a[len(a) - 1 - i] if i < len(a) else 1
        y = b[len(b) - 1 - i] if i < len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1 or equal(x, y):
            out.append(x)
        elif isinstance(x, int) and isinstance(y, int):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        else:  # two different symbols: trust the model (one of them is 1 or they are equal at run time)
            out.append(x if isinstance(y, int) else y)
    return tuple(reversed(out))
