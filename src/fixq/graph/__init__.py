"""Float graphs: ops, shapes, validation and float reference execution (docs/engine.md).

4-D activations are NCHW at the model's boundary and NHWC inside (fixq.layout); :func:`run_float`
uses the internal layout of the int8 engine so tensors compare one to one.  Reading and writing
graphs in files is :mod:`fixq.archive`'s job; this package holds no file I/O.
"""
from .ops import (ACTIVATIONS, LIMITS, NAME_CHARS, OPS, TABLE_OPS, WEIGHTED, GraphError, Node, check_elements, pad4,
                  check_name, is_depthwise, output_shape)
from .reference import check_input, elementwise, float_node, run_float, softmax
from .spec import GRAPH_FORMAT, Graph, infer_mlp, json_object, parse_spec, validate

__all__ = ["ACTIVATIONS", "LIMITS", "NAME_CHARS", "OPS", "TABLE_OPS", "WEIGHTED", "GraphError", "Node",
           "check_elements", "pad4", "check_name", "is_depthwise", "output_shape", "check_input", "elementwise", "float_node",
           "run_float", "softmax", "GRAPH_FORMAT", "Graph", "infer_mlp", "json_object", "parse_spec", "validate"]
