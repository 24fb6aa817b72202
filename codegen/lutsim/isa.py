"""The lmma ISA of the simulated LUT target: instructions, programs, a textual assembly that parses back,
a JSON program format, and a static verifier.

A program is one kernel launch. It declares its global buffers (bound to host arrays by name), its shared
scratchpad buffers and the one lmma shape/dtype combination it issues, then lists straight-line
instructions (loops are unrolled by the code generator, so every address is a constant and the verifier
can check every access before anything runs).

Storage: ``global`` buffers (typed N-d arrays in device memory), ``shared`` buffers (typed N-d arrays in
the core's scratchpad; their total size is bounded by the core's capacity) and four register classes of
tile-shaped fragments: ``a`` (precomputed half-tables, [M, 2^(K-1)]), ``w`` (symmetrized K-bit weight
indices, one per bit plane, [bits, N]), ``c`` (lmma accumulators, [M, N]) and ``y`` (float64 epilogue
accumulators, [M, N]).

Instructions (operands: registers ``c0``, addresses ``buf[i, j, k]``, boxes ``[e0, e1, e2]``):

    fill       sbuf                                   zero a whole shared buffer
    ld.g2s     sbuf[..], gbuf[..], [box]              copy a box global -> shared
    ldf.a      aR, sbuf[m, j, 0]                      A fragment: sbuf[m:m+M, j, 0:E]
    ldf.w.lo   wR, sbuf[0, n, jb]   (or ldf.w.hi)     W fragment: low/high nibbles of sbuf[0:bits, n:n+N, jb]
    zero       cR | yR
    lmma.m{M}n{N}k{K}.{A}.{W}.{Acc}.{O}  cD, aR, wR, cS   cD = cS + sum_t 2^t (+-)A[m, idx_t(n)]
    gscale     yR, cR, tscale[m, g], scales[n, g], [mv, nv]      y += c * ts[m] * (s[n] / 2)
    zcorr      yR, xsum[m, 0], scales[n, 0], zeros[n, 0], [mv, nv]   y -= xsum . (s/2 * (2z + 1 - 2^b))
    bias       yR, bias[n], [mv, nv]
    st.r2g     out[m, n], yR, [mv, nv]                store (cast to the out buffer's dtype)
    tbuild.{A} tables[m, 0, 0], tscale[m, 0], xsum[m, 0], x[m, 0], [rows]   table precompute for rows
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Union

import numpy as np

FORMAT = "lutsim-program-v1"
G = 4  # activations per table in the executable weight layout (bitplane-g4-sym-v1)

# table (A operand) dtypes: storage dtype, bytes, accumulator
A_DTYPES = {"s8": ("int8", 1, "s32"), "f16": ("float16", 2, "f32"), "f8": ("float8_e4m3", 1, "f32"),
            "f32": ("float32", 4, "f32")}
# weight dtypes: bit planes issued bit-serially
W_DTYPES = {"u1": 1, "u2": 2, "u3": 3, "u4": 4, "t2": 2}  # t2: ternary {-1, 0, 1} stored as 2-bit codes
ACC_DTYPES = {"s32": "int32", "f32": "float32"}
OUT_DTYPES = {"s32": "int32", "f32": "float32", "f16": "float16"}
# the shapes a core implements (elongated: small M, large N); K is the table group (executable: K = 4)
LMMA_SHAPES = ((1, 128, 4), (2, 64, 4), (4, 32, 4), (8, 16, 4), (2, 32, 4), (2, 128, 4), (4, 64, 4))
# numpy dtypes of global/shared buffers
MEM_DTYPES = {"s8": np.int8, "u8": np.uint8, "s32": np.int32, "f16": np.float16, "f32": np.float32,
              "f64": np.float64}
REG_CLASSES = ("a", "w", "c", "y")

OPCODES = ("fill", "ld.g2s", "ldf.a", "ldf.w.lo", "ldf.w.hi", "zero", "lmma", "gscale", "zcorr", "bias",
           "st.r2g", "tbuild")


class ProgramError(ValueError):
    """An invalid program: unknown opcode, bad shape, out-of-bounds address, wrong register class..."""


@dataclass(frozen=True)
class Reg:
    cls: str
    idx: int

    def __str__(self):
        return f"{self.cls}{self.idx}"


@dataclass(frozen=True)
class Addr:
    buf: str
    idx: tuple[int, ...]

    def __str__(self):
        return f"{self.buf}[{', '.join(map(str, self.idx))}]"


@dataclass(frozen=True)
class Box:
    ext: tuple[int, ...]

    def __str__(self):
        return f"[{', '.join(map(str, self.ext))}]"


Operand = Union[Reg, Addr, Box, str]


@dataclass(frozen=True)
class LmmaShape:
    m: int
    n: int
    k: int
    a: str
    w: str
    acc: str
    out: str

    @property
    def entries(self) -> int:
        return 1 << (self.k - 1)

    @property
    def planes(self) -> int:
        return W_DTYPES[self.w]

    @property
    def mnemonic(self) -> str:
        return f"lmma.m{self.m}n{self.n}k{self.k}.{self.a}.{self.w}.{self.acc}.{self.out}"

    @classmethod
    def parse(cls, text: str) -> "LmmaShape":
        m = re.fullmatch(r"lmma\.m(\d+)n(\d+)k(\d+)\.(\w+)\.(\w+)\.(\w+)\.(\w+)", text)
        if not m:
            raise ProgramError(f"bad lmma mnemonic {text!r}: expected lmma.m<M>n<N>k<K>.<A>.<W>.<Acc>.<O>, "
                               f"e.g. lmma.m2n64k4.s8.u2.s32.s32")
        s = cls(int(m[1]), int(m[2]), int(m[3]), m[4], m[5], m[6], m[7])
        s.check()
        return s

    def check(self, shapes=LMMA_SHAPES) -> None:
        if (self.m, self.n, self.k) not in shapes:
            raise ProgramError(f"lmma shape m{self.m}n{self.n}k{self.k} is not implemented by this core; "
                               f"shapes: {', '.join(f'm{m}n{n}k{k}' for m, n, k in shapes)}")
        if self.a not in A_DTYPES:
            raise ProgramError(f"lmma A dtype {self.a!r} unknown; one of {list(A_DTYPES)}")
        if self.w not in W_DTYPES:
            raise ProgramError(f"lmma W dtype {self.w!r} unknown; one of {list(W_DTYPES)}")
        if self.acc != A_DTYPES[self.a][2]:
            raise ProgramError(f"lmma accumulator {self.acc!r} does not go with A={self.a} "
                               f"(needs {A_DTYPES[self.a][2]})")
        if self.out not in OUT_DTYPES:
            raise ProgramError(f"lmma output dtype {self.out!r} unknown; one of {list(OUT_DTYPES)}")


@dataclass(frozen=True)
class BufferDecl:
    name: str
    dtype: str
    shape: tuple[int, ...]
    space: str            # "global" | "shared"
    role: str = "in"      # globals: "in" | "out"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(MEM_DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class Instr:
    op: str                       # opcode with suffixes, e.g. "lmma.m2n64k4.s8.u2.s32.s32", "tbuild.s8"
    args: tuple[Operand, ...]

    @property
    def base(self) -> str:
        if self.op.startswith("lmma."):
            return "lmma"
        if self.op.startswith("tbuild."):
            return "tbuild"
        return self.op

    def __str__(self):
        return f"{self.op} " + ", ".join(map(str, self.args)) if self.args else self.op


@dataclass
class Program:
    kernel: str                                   # "lut_matmul" | "lut_precompute"
    name: str
    lmma: LmmaShape | None
    params: dict = field(default_factory=dict)    # bits, group_size, k, k_pad, ...
    buffers: list[BufferDecl] = field(default_factory=list)
    code: list[Instr] = field(default_factory=list)

    def buffer(self, name: str) -> BufferDecl:
        for b in self.buffers:
            if b.name == name:
                return b
        raise ProgramError(f"no buffer named {name!r}; declared: {[b.name for b in self.buffers]}")

    # ---- text ------------------------------------------------------------------------------------
    def to_asm(self) -> str:
        lines = [f".kernel {self.kernel} {self.name}"]
        if self.lmma is not None:
            lines.append(f".lmma {self.lmma.mnemonic}")
        for k, v in self.params.items():
            lines.append(f".param {k} {json.dumps(v)}")
        for b in self.buffers:
            role = f" {b.role}" if b.space == "global" else ""
            lines.append(f".{b.space} {b.name} {b.dtype} [{', '.join(map(str, b.shape))}]{role}")
        lines += [f"    {i}" for i in self.code]
        return "\n".join(lines) + "\n"

    # ---- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        def arg(a):
            if isinstance(a, Reg):
                return {"reg": str(a)}
            if isinstance(a, Addr):
                return {"buf": a.buf, "idx": list(a.idx)}
            if isinstance(a, Box):
                return {"box": list(a.ext)}
            return {"sym": a}

        return {"format": FORMAT, "kernel": self.kernel, "name": self.name,
                "lmma": None if self.lmma is None else self.lmma.mnemonic, "params": self.params,
                "buffers": [{"name": b.name, "dtype": b.dtype, "shape": list(b.shape), "space": b.space,
                             "role": b.role} for b in self.buffers],
                "code": [[i.op] + [arg(a) for a in i.args] for i in self.code]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, d: dict | str) -> "Program":
        if isinstance(d, str):
            d = json.loads(d)
        if d.get("format") != FORMAT:
            raise ProgramError(f"not a {FORMAT} program (format={d.get('format')!r})")

        def arg(a):
            if "reg" in a:
                return _reg(a["reg"])
            if "buf" in a:
                return Addr(a["buf"], tuple(int(x) for x in a["idx"]))
            if "box" in a:
                return Box(tuple(int(x) for x in a["box"]))
            return a["sym"]

        p = cls(d["kernel"], d["name"], None if d["lmma"] is None else LmmaShape.parse(d["lmma"]),
                dict(d["params"]),
                [BufferDecl(b["name"], b["dtype"], tuple(b["shape"]), b["space"], b["role"]) for b in d["buffers"]],
                [Instr(c[0], tuple(arg(a) for a in c[1:])) for c in d["code"]])
        return p

    def __eq__(self, other):
        return isinstance(other, Program) and self.to_json() == other.to_json()


_REG_RE = re.compile(r"([acwy])(\d+)")
_ADDR_RE = re.compile(r"([A-Za-z_]\w*)\[([^\]]*)\]")


def _reg(text: str) -> Reg:
    m = _REG_RE.fullmatch(text)
    if not m:
        raise ProgramError(f"bad register {text!r}")
    return Reg(m[1], int(m[2]))


def _ints(text: str, what: str, line: int) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ProgramError(f"line {line}: bad {what} [{text}]: expected integers") from None


def _split_operands(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_asm(text: str) -> Program:
    """Parse the textual assembly (``Program.to_asm``) back into a Program."""
    prog = None
    for ln, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            d, rest = parts[0], parts[1] if len(parts) > 1 else ""
            if d == ".kernel":
                kn = rest.split()
                if len(kn) != 2:
                    raise ProgramError(f"line {ln}: .kernel needs a kind and a name")
                prog = Program(kn[0], kn[1], None)
                continue
            if prog is None:
                raise ProgramError(f"line {ln}: {d} before .kernel")
            if d == ".lmma":
                prog.lmma = LmmaShape.parse(rest.strip())
            elif d == ".param":
                k, v = rest.split(None, 1)
                prog.params[k] = json.loads(v)
            elif d in (".global", ".shared"):
                m = re.fullmatch(r"(\w+)\s+(\w+)\s+\[([^\]]*)\]\s*(\w+)?", rest.strip())
                if not m:
                    raise ProgramError(f"line {ln}: bad buffer declaration {line!r}")
                if m[2] not in MEM_DTYPES:
                    raise ProgramError(f"line {ln}: unknown buffer dtype {m[2]!r}; one of {list(MEM_DTYPES)}")
                prog.buffers.append(BufferDecl(m[1], m[2], _ints(m[3], "shape", ln), d[1:],
                                               m[4] or "in"))
            else:
                raise ProgramError(f"line {ln}: unknown directive {d}")
            continue
        if prog is None:
            raise ProgramError(f"line {ln}: instruction before .kernel")
        parts = line.split(None, 1)
        op, ops = parts[0], _split_operands(parts[1]) if len(parts) > 1 else []
        args = []
        for o in ops:
            if _REG_RE.fullmatch(o):
                args.append(_reg(o))
            elif (m := _ADDR_RE.fullmatch(o)):
                args.append(Addr(m[1], _ints(m[2], "address", ln)))
            elif o.startswith("[") and o.endswith("]"):
                args.append(Box(_ints(o[1:-1], "box", ln)))
            elif re.fullmatch(r"[A-Za-z_]\w*", o):
                args.append(o)
            else:
                raise ProgramError(f"line {ln}: cannot read operand {o!r} of {line!r}")
        prog.code.append(Instr(op, tuple(args)))
    if prog is None:
        raise ProgramError("empty program: no .kernel directive")
    return prog
