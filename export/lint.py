"""TensorRT-readiness lint for exported graphs: what TensorRT cannot build fails here, at export.

Rejects, per graph: an opset below 17; ops outside TensorRT's documented ONNX operator support;
random-number ops (noise maps are inputs, never generated in-graph); a Gather or Scatter whose
data is a differentiated tensor (one computed from a graph input); a convolution whose weights
are computed from a graph input (the grouped per-sample-weight form of modulated convolution —
it must be scale → conv with constant weights → scale); a MaxPool that returns indices.
"""

from __future__ import annotations

import onnx

MIN_OPSET = 17

# TensorRT 10 ONNX operator support (onnx-tensorrt docs/operators.md), the ops these graphs can
# plausibly contain. An op missing here fails the lint until it is checked against that list.
TENSORRT_OPS = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish
Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax LRN MatMul Max MaxPool Mean Min Mod Mul Neg Not OneHot Or Pad Pow PRelu Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND Selu
Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Where Xor
""".split()
)
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"}
)
INDEXING_OPS = frozenset({"Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "Scatter"})
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


def _float_inputs(model: onnx.ModelProto) -> set[str]:
    initializers = {i.name for i in model.graph.initializer}
    return {
        i.name for i in model.graph.input if i.name not in initializers and i.type.tensor_type.elem_type in FLOAT_TYPES
    }


def _differentiated(model: onnx.ModelProto) -> set[str]:
    """Float tensors computed from the graph's float inputs (nodes are topologically sorted).
    Shape arithmetic (Shape and what follows from it) is integer-typed and stays out."""
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    live = _float_inputs(model)
    for node in model.graph.node:
        if node.op_type == "Shape" or node.op_type == "Size":
            continue
        if any(i in live for i in node.input):
            for out in node.output:
                if types.get(out, onnx.TensorProto.FLOAT) in FLOAT_TYPES:
                    live.add(out)
    return live


def lint(model: onnx.ModelProto, is_vjp: bool = False) -> list[str]:
    """Problems that keep `model` from TensorRT, one line each (empty: ready)."""
    model = onnx.shape_inference.infer_shapes(model)
    problems = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}")
    live = _differentiated(model)
    for node in model.graph.node:
        where = f"{node.op_type} '{node.name or node.output[0]}'"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom-domain op ({node.domain}) — inline it before export")
        elif node.op_type in RANDOM_OPS:
            problems.append(f"{where}: random numbers generated in-graph; pass noise as an input")
        elif node.op_type not in TENSORRT_OPS:
            problems.append(f"{where}: not in TensorRT's ONNX operator support")
        if node.op_type in INDEXING_OPS and node.input and node.input[0] in live:
            problems.append(f"{where}: indexes a differentiated tensor; use Slice or separate inputs")
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in live:
            problems.append(f"{where}: weights computed from inputs (per-sample weights); use scale -> conv -> scale")
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] and is_vjp:
            problems.append(f"{where}: MaxPool indices in a VJP graph; use a comparison mask")
    return problems
