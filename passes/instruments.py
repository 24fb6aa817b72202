"""Pass instruments: numbered IR dumps (TVM's DumpIR, MLIR's print-after-change/failure) and timing."""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..ir.graph import Graph
from ..ir.printer import print_graph
from .manager import Pass, PassInstrument, PassResult


class DumpIR(PassInstrument):
    """Writes ``000_import.txt`` then ``NNN_<pass>.txt`` after each pass, in the parseable text form.

    ``only_on_change`` skips passes that changed nothing; ``on_failure`` writes ``NNN_<pass>.failed.txt``
    with the graph as it was when the pass raised.
    """

    def __init__(self, directory, only_on_change: bool = False, on_failure: bool = True,
                 first_name: str = "import"):
        self.dir = Path(directory)
        self.only_on_change, self.dump_failure, self.first_name = only_on_change, on_failure, first_name
        self.written: list[Path] = []

    def _write(self, name: str, g: Graph) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(print_graph(g))
        os.replace(tmp, path)
        self.written.append(path)

    def on_start(self, g: Graph) -> None:
        self._write(f"000_{self.first_name}.txt", g)

    def after_pass(self, index: int, p: Pass, result: PassResult) -> None:
        if result.changed or not self.only_on_change:
            self._write(f"{index:03d}_{p.name}.txt", result.graph)

    def on_failure(self, index: int, p: Pass, g: Graph, error: BaseException) -> None:
        if self.dump_failure:
            self._write(f"{index:03d}_{p.name}.failed.txt", g)


class PassTiming(PassInstrument):
    def __init__(self):
        self.times: list[tuple[str, float, bool]] = []
        self._t0 = 0.0

    def before_pass(self, index, p, g):
        self._t0 = time.perf_counter()

    def after_pass(self, index, p, result):
        self.times.append((p.name, time.perf_counter() - self._t0, result.changed))

    def report(self) -> str:
        rows = [f"  {name:<20} {t * 1e3:9.1f} ms  {'changed' if ch else ''}" for name, t, ch in self.times]
        return "pass timing:\n" + "\n".join(rows)
