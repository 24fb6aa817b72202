"""Symbolic dims at run time, without sympy: the compiler writes dims as strings such as ``past+seq`` or
``floor(seq/2)``; here they are parsed once into checked Python code and evaluated with the bound sizes."""
from __future__ import annotations

import ast
import functools
import math

_FUNCS = {"floor": math.floor, "ceiling": math.ceil, "Mod": lambda a, b: a % b, "Max": max, "Min": min}
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Call, ast.Add, ast.Sub,
            ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd)


@functools.lru_cache(maxsize=4096)
def _compiled(expr: str):
    tree = ast.parse(expr, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED) or (isinstance(node, ast.Call) and
                                              not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS)):
            raise ValueError(f"dim expression {expr!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ValueError(f"dim expression {expr!r}: constant {node.value!r} is not a number")
    return compile(tree, "<dim>", "eval")


def evaluate(d, env: dict[str, int]) -> int:
    """The size of dim ``d`` (an int, or a string over the symbols bound in ``env``)."""
    if not isinstance(d, str):
        return int(d)
    if d.isidentifier() and d not in _FUNCS:
        if d not in env:
            raise ValueError(f"dim {d!r} is not bound (bound: {sorted(env)})")
        return env[d]
    try:
        v = eval(_compiled(d), {"__builtins__": {}, **_FUNCS}, env)  # noqa: S307 (the AST is checked above)
    except NameError as e:
        raise ValueError(f"dim {d!r} uses an unbound symbol ({e}); bound: {sorted(env)}") from None
    return int(v)
