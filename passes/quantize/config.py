"""Quantization settings: what users write (``QuantConfig``) and what one layer gets (``LayerQuant``)."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Sequence

BITS = (1, 2, 3, 4, 8)
GROUP_SIZES = (32, 64, 128, 256)
METHODS = ("rtn", "clip", "gptq")
SCALE_DTYPES = ("f16", "f32")
TABLE_DTYPES = ("int8", "f32")
FLOAT_DTYPES = ("float16", "float32")   # the precision of the linear layers left in float (float_weights.py)
# LLM layers kept in higher precision unless asked: embeddings (and a tied lm_head, which shares their
# weight) and the lm_head.
DEFAULT_EXCLUDE = ("*embed*", "*lm_head*")


@dataclass(frozen=True)
class LayerQuant:
    """The fully resolved choice for one weight."""
    bits: int | str = 4                # 1..4 (8 for imported Q8_0), or "ternary"
    group_size: int | None = 128       # None: one group per output channel
    symmetric: bool = False
    scale_dtype: str = "f16"
    method: str = "rtn"
    table_dtype: str = "int8"          # int8 tables (fast) or f32 tables (exact to rounding)
    g: int = 4                         # activations per table: 2^(g-1) stored entries after symmetrization

    @property
    def ternary(self) -> bool:
        return self.bits == "ternary"

    @property
    def nbits(self) -> int:
        """Bit planes stored: ternary codes {0, 1, 2} take two."""
        return 2 if self.ternary else int(self.bits)

    def validate(self) -> "LayerQuant":
        if self.bits not in BITS and self.bits != "ternary":
            raise ValueError(f"bits must be one of {BITS[:-1]} or 'ternary', got {self.bits!r}")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size <= 0
                                            or self.group_size % 8):
            raise ValueError(f"group_size must be a positive multiple of 8 (e.g. {GROUP_SIZES}) or None for "
                             f"per-channel, got {self.group_size!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype must be one of {SCALE_DTYPES}, got {self.scale_dtype!r}")
        if self.table_dtype not in TABLE_DTYPES:
            raise ValueError(f"table_dtype must be one of {TABLE_DTYPES}, got {self.table_dtype!r}")
        if self.g != 4:
            raise ValueError(f"only g=4 activations per table is implemented, got g={self.g}")
        if self.ternary and self.symmetric:
            raise ValueError("ternary weights are symmetric by construction: leave symmetric=False")
        return self


@dataclass(frozen=True)
class QuantConfig:
    """How ``lutc.compile`` quantizes a model's linear layers.

    ``include``/``exclude`` are fnmatch patterns on weight names (``model.layers.3.mlp.down_proj.weight``);
    ``overrides`` maps a pattern to field changes, e.g. ``{"*down_proj*": {"bits": 4}}`` (the first matching
    pattern wins). ``calibration`` (for ``method="gptq"``) is a list of model inputs. ``float_dtype``: the linear
    layers left in float (the lm_head unless included; a tied embedding with it) keep float16 values ("float16",
    the default: half the bytes where the backend stores them so, e.g. the CPU target) or float32 ones.
    """
    bits: int | str = 4
    group_size: int | None = 128
    symmetric: bool = False
    scale_dtype: str = "f16"
    method: str = "rtn"
    table_dtype: str = "int8"
    g: int = 4
    include: Sequence[str] = ("*",)
    exclude: Sequence[str] | None = None
    overrides: Mapping[str, Mapping] = field(default_factory=dict)
    calibration: Sequence | None = None
    gptq_damp: float = 0.01
    float_dtype: str = "float16"

    def __post_init__(self):
        self.base().validate()
        if self.float_dtype not in FLOAT_DTYPES:
            raise ValueError(f"float_dtype must be one of {FLOAT_DTYPES}, got {self.float_dtype!r}")
        known = {f.name for f in fields(LayerQuant)}
        for pat, ov in self.overrides.items():
            bad = set(ov) - known
            if bad:
                raise ValueError(f"override {pat!r}: unknown fields {sorted(bad)}; allowed: {sorted(known)}")
            replace(self.base(), **ov).validate()

    def base(self) -> LayerQuant:
        return LayerQuant(self.bits, self.group_size, self.symmetric, self.scale_dtype, self.method,
                          self.table_dtype, self.g)

    def resolve(self, name: str) -> LayerQuant | None:
        """The choice for weight ``name``, or None when it stays in float."""
        exclude = DEFAULT_EXCLUDE if self.exclude is None else self.exclude
        if not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return None
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            return None
        for pat, ov in self.overrides.items():
            if fnmatch.fnmatchcase(name, pat):
                return replace(self.base(), **ov)
        return self.base()

    def check_patterns(self, names: Sequence[str]) -> None:
        """A user pattern that matches no layer is almost always a typo: say so."""
        user = list(self.include if tuple(self.include) != ("*",) else ()) + list(self.exclude or ()) \
            + list(self.overrides)
        for pat in user:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                shown = ", ".join(list(names)[:6]) + (" ..." if len(names) > 6 else "")
                raise ValueError(f"quantization pattern {pat!r} matches no linear layer; layers are: {shown}")
