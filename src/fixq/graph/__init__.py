"""Float graphs: ops, shapes, validation and float reference execution (docs/engine.md).

4-D activations are NCHW at the model's boundary and NHWC inside (fixq.layout); :func:`run_float`
uses the internal layout of the int8 engine so tensors compare one to one.  Reading and writing
graphs in files is :mod:`fixq.archive`'s job; this package holds no file I/O.
"""
from .ops import (ACTIVATIONS, FLOAT_WEIGHTED, INT_INPUTS, LIMITS, MAX_RANK, NAME_CHARS, OPS, SEQUENCE_OPS, TABLE_OPS,
                  WEIGHTED, Dim, GraphError, Node, check_elements, check_input_kinds, check_name, is_depthwise,
                  output_shape, pad4, parse_dims, parse_shape)
from .reference import (attention_bias, check_feeds, check_input, elementwise, float_node, gelu, graph_roles,
                        input_roles, l2_normalize, layer_norm, masked_mean, reshape_to, run_float, sequence_node,
                        softmax)
from .spec import GRAPH_FORMAT, Graph, infer_mlp, json_object, parse_input, parse_spec, validate

__all__ = ["ACTIVATIONS", "FLOAT_WEIGHTED", "INT_INPUTS", "LIMITS", "MAX_RANK", "NAME_CHARS", "OPS", "SEQUENCE_OPS",
           "TABLE_OPS", "WEIGHTED", "Dim", "GraphError", "Node", "check_elements", "check_input_kinds", "check_name",
           "is_depthwise", "output_shape", "pad4", "parse_dims", "parse_shape", "attention_bias", "check_feeds", "check_input",
           "elementwise", "float_node", "gelu", "graph_roles", "input_roles", "l2_normalize", "layer_norm",
           "masked_mean", "reshape_to", "run_float", "sequence_node", "softmax", "GRAPH_FORMAT", "Graph", "infer_mlp",
           "json_object", "parse_input", "parse_spec", "validate"]
