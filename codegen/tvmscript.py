"""TVMScript's ``tirx`` namespace for the kernel generators (``from ..tvmscript import T``), with TVM 0.27's macro
lookup made cheap.

Every ``T.macro`` call finds the parser through ``inspect.getouterframes``, which reads the source context of
every frame on the stack (``findsource`` and a scan of ``sys.modules`` per frame): ~60 ms per macro call here, so
parsing one prim_func of the CPU LUT driver took ~1.5 s, and the test suite on a cold kernel cache ran 52 minutes
(12 with this and one parse per library). The replacement walks ``f_back`` and returns the same object: the first
frame whose globals hold the parser."""
from __future__ import annotations

import functools
import sys


@functools.lru_cache(maxsize=1)
def _patched():
    from tvm.script.parser.core import parser as core
    from tvm.script import tirx

    macro = getattr(core, "ScriptMacro", None)
    if macro is not None and hasattr(macro, "_find_parser_def") and hasattr(macro, "parser_object_name"):
        def _find_parser_def(self):
            frame = sys._getframe(1)
            while frame is not None:
                parser = frame.f_globals.get(macro.parser_object_name)
                if parser is not None:
                    return parser
                frame = frame.f_back
            raise RuntimeError(f"{macro.parser_object_name} not available")

        macro._find_parser_def = _find_parser_def
    return tirx


def __getattr__(name: str):
    if name == "T":
        return _patched()
    raise AttributeError(name)
