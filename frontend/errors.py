"""Frontend errors: what was not understood, where, and what is supported."""
from __future__ import annotations


class FrontendError(ValueError):
    pass


class UnsupportedOpError(FrontendError):
    def __init__(self, op_type: str, node: str, supported, location: str | None = None, frontend: str = ""):
        self.op_type, self.node, self.location = op_type, node, location
        self.supported = sorted(supported)
        where = f" at {location}" if location else ""
        super().__init__(f"{frontend} op {op_type!r} (node {node!r}{where}) is not supported; "
                         f"supported {frontend} ops: {', '.join(self.supported)}")
