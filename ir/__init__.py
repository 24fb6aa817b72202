"""The typed graph IR: ops, types, graph, text printer/parser, JSON, DOT and the verifier."""
from .graph import Graph, Node, Ref
from .ops import ARITY, GroupOp, Op
from .parser import ParseError, parse_graph
from .printer import print_graph, summary
from .serialize import from_json, to_dot, to_json
from .shapes import ShapeError, infer_node
from .types import DType, TensorType, parse_type
from .verifier import VerificationError, verify

__all__ = ["Graph", "Node", "Ref", "Op", "GroupOp", "ARITY", "DType", "TensorType", "parse_type",
           "print_graph", "parse_graph", "ParseError", "summary", "to_json", "from_json", "to_dot",
           "infer_node", "ShapeError", "verify", "VerificationError"]
