"""What decode replays share (CUDA graphs, runtime/cuda_graphs.py; bound CPU plans, runtime/replay.py): where
the cache position enters a program, and the bookkeeping that lets one decode step follow the last.

A decode step calls the same kernels on buffers of the same shapes every token; only the cache position
changes. A replay is built for one shapes key (symbol sizes other than the past length, and the cache buffers'
addresses) the second time a step of that key comes (the first runs eagerly: prompts of one-off lengths never
pay for a build), and is reused while the key holds. When the next step's pasts are exactly the presents the
last replayed step handed out (the same objects, as ``generate`` passes them back), the cache state is known
and only the other inputs (token ids) are bound and checked (``run_again``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from .program import Program, bind_inputs


def mentions(obj, symbols: frozenset[str]) -> bool:
    """Whether a step's attrs (or a dim expression) name one of ``symbols``."""
    if isinstance(obj, str):
        return any(t in symbols for t in re.findall(r"[A-Za-z_]\w*", obj))
    if isinstance(obj, dict):
        return any(mentions(v, symbols) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(mentions(v, symbols) for v in obj)
    return False


def kv_pairs(step) -> list[tuple[str, str]]:
    """(past, present) values of a step that extends a KV cache: a ``kv_append``, or the CPU's attention block
    (``rope_kv_attention``: its last two inputs are the pasts, its first two outputs the presents)."""
    if step.kernel == "kv_append":
        return [(step.inputs[0], step.outputs[0])]
    if step.kernel == "rope_kv_attention":
        return [(step.inputs[-2], step.outputs[0]), (step.inputs[-1], step.outputs[1])]
    return []


def _is_attention(step) -> bool:
    return step.attrs.get("tvm", {}).get("kind") == "attention"


@dataclass
class DecodeSite:
    """Where the cache position enters a program."""
    symbol: str = ""                                       # the past length's dim name ("past")
    pasts: dict[int, int] = field(default_factory=dict)    # output index of a present -> input slot of its past
    ids: list[tuple[int, int]] = field(default_factory=list)   # (input slot, vocabulary) of embedded token ids
    blocker: str | None = None                             # why no step of this program is replayed


def analyse(program: Program) -> DecodeSite:
    site = DecodeSite()
    slots = {s["name"]: i for i, s in enumerate(program.inputs)}
    pairs = [(pair, s) for s in program.steps for pair in kv_pairs(s)]
    if not pairs:
        site.blocker = "the program has no KV cache"
        return site
    if any(past not in slots for (past, _), _ in pairs):
        site.blocker = "the KV appends do not all extend past inputs of one length"
        return site
    lengths = {program.inputs[slots[past]]["shape"][2] for (past, _), _ in pairs}
    if len(lengths) != 1:
        site.blocker = "the KV appends do not all extend past inputs of one length"
        return site
    (symbol,) = lengths
    if not isinstance(symbol, str) or not symbol.isidentifier():
        site.blocker = f"the past length is {symbol!r}, not a dim of its own"
        return site
    site.symbol = symbol
    symbols = frozenset([symbol])
    present = {pres for (_, pres), _ in pairs}
    outputs = {o["value"]: j for j, o in enumerate(program.outputs)}
    site.pasts = {outputs[pres]: slots[past] for (past, pres), _ in pairs if pres in outputs}
    pasts = {past for (past, _), _ in pairs}
    dependent = {v for v, c in program.constants.items() if c.get("symbolic") and mentions(c["value"], symbols)}
    for step in program.steps:
        own = {past for past, _ in kv_pairs(step)}
        if (pasts - own) & set(step.inputs):
            site.blocker = f"{step.kernel} {step.name} reads a past cache input"
        elif any(v in present for v in step.inputs) and not (
                _is_attention(step) and not {step.inputs[0]} & set(present)):
            site.blocker = f"{step.kernel} {step.name} reads a KV cache (only attention may)"
        elif (mentions(step.attrs, symbols) or dependent & set(step.inputs)) and step.kernel != "slice":
            site.blocker = f"{step.kernel} {step.name} depends on the cache length"
        if site.blocker:
            return site
        if step.attrs.get("tvm", {}).get("kind") == "embedding" and step.inputs[1] in slots:
            site.ids.append((slots[step.inputs[1]], step.attrs["tvm"]["params"]["vocab"]))
    return site


@dataclass
class Last:
    presents: dict[int, object]   # input slot -> the present it handed out (the next step's past)
    key: tuple
    bufs: dict
    env: dict


class DecodeReplay:
    """The replays of one interpreter, by shapes key; subclasses say how a step of a known key runs
    (``replayed``). ``run`` and ``run_again`` return the step's outputs, or None when it runs eagerly."""

    def __init__(self, interp):
        self.interp, self.site = interp, analyse(interp.program)
        self.blocker = self.site.blocker
        self.appended: dict[tuple, int] = {}   # shapes key -> positions a step adds (from its eager run)
        self.replays = 0
        self._last: Last | None = None   # the last replayed step, which the next one may continue

    def forget(self) -> None:
        """Drop what is bound to buffers an eager step may have moved."""
        self._last = None

    def run(self, arrays: list, env: dict[str, int]) -> list | None:
        if self.blocker:
            return None
        kv = self.interp.kv
        bufs = {slot: kv.owner(arrays[slot]) for slot in self.site.pasts.values()}
        if not bufs or any(b is None for b in bufs.values()):
            return None
        key = (tuple(sorted((k, v) for k, v in env.items() if k != self.site.symbol)),
               tuple(kv._address(b) for b in bufs.values()))
        return self._step(arrays, env, key, bufs)

    def run_again(self, inputs) -> list | None:
        """The step after a replayed one, when its pasts are the presents that step handed out (the same
        objects): only the other inputs (token ids) are bound and checked, the cache state is known."""
        last, specs = self._last, self.interp.program.inputs
        if last is None or self.blocker:
            return None
        if isinstance(inputs, Mapping):
            if len(inputs) != len(specs) or any(s["name"] not in inputs for s in specs):
                return None
            values = [inputs[s["name"]] for s in specs]
        else:
            values = list(inputs)
        if len(values) != len(specs) or any(values[i] is not t for i, t in last.presents.items()):
            return None
        others = [i for i in range(len(specs)) if i not in last.presents]
        bound, env_others = bind_inputs([specs[i] for i in others], [values[i] for i in others],
                                        self.interp.convert_input)
        symbol = self.site.symbol
        env = dict(last.env, **{symbol: last.env[symbol] + self.appended[last.key]})
        if any(env.get(k) != v for k, v in env_others.items()):
            return None
        for i, a in zip(others, bound):
            values[i] = a
        return self._step(values, env, last.key, last.bufs)

    def _step(self, arrays: list, env: dict[str, int], key: tuple, bufs: dict) -> list | None:
        self._last = None
        if key not in self.appended:   # the first step of these shapes over these caches runs eagerly
            self.appended = {k: s for k, s in self.appended.items() if k[1] == key[1]}   # older caches: done
            self.forget()
            outs = self.interp.execute(self.interp.plan, arrays, env)
            self.appended[key] = self.interp.kv.appended
            return outs
        p, s = env[self.site.symbol], self.appended[key]
        if p + s > min(b.shape[2] for b in bufs.values()):
            return None
        outs = self.replayed(arrays, env, key, p, s, bufs)
        if outs is not None:
            self.replays += 1
            self._last = Last({slot: outs[j] for j, slot in self.site.pasts.items()}, key, bufs, env)
        return outs

    def replayed(self, arrays: list, env: dict, key: tuple, p: int, s: int, bufs: dict) -> list | None:
        raise NotImplementedError

    def finish(self, outs: list, p: int, s: int, bufs: dict, key: tuple | None = None) -> list:
        """A replayed step's outputs as an eager step returns them: presents as the filled views. ``key``:
        the step's shapes key, whose second part holds the buffers' addresses."""
        outs = list(outs)
        addresses = dict(zip(bufs, key[1])) if key is not None else {}
        for j, slot in self.site.pasts.items():
            outs[j] = bufs[slot][:, :, :p + s]
            self.interp.kv.mark_filled(bufs[slot], p + s, addresses.get(slot))
        self.interp.kv.appended = s
        return outs
