"""OnnxTorchGraph against onnxruntime: every intermediate value, gradients, errors."""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from layerlens.errors import GradientUnavailableError, InputError, LayerSelectionError
from layerlens.models.onnx_torch import OnnxTorchGraph, unsupported_operators

RTOL, ATOL = 1e-4, 1e-5
EXPORT_BATCH, RUN_BATCH = 2, 3


# ---------------------------------------------------------------- helpers


def _export(model: nn.Module, sample: torch.Tensor, opset: int) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            model,
            (sample,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
        return onnx.load(path)


def _expose_all_values(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs include every node output (typed where shape
    inference knows the type; onnxruntime infers the others, e.g. of function operators)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        value.name: value.type.tensor_type.elem_type
        for value in (*inferred.graph.value_info, *inferred.graph.output)
    }
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {value.name for value in exposed.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(
                    helper.make_tensor_value_info(name, types[name], None) if types.get(name)
                    else helper.make_empty_tensor_value_info(name))
    return exposed


def _assert_matches_onnxruntime(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """Run both engines on ``feeds``, compare every value, return the interpreter's."""
    exposed = _expose_all_values(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings where onnx's shape inference disagrees
    session = ort.InferenceSession(
        exposed.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [output.name for output in session.get_outputs()]
    expected = session.run(names, feeds)
    graph = OnnxTorchGraph(model)
    with torch.no_grad():
        actual = graph({name: torch.from_numpy(value) for name, value in feeds.items()}, names)
    for name, want, got in zip(names, expected, actual, strict=True):
        assert got.dtype == torch.from_numpy(np.asarray(want)).dtype, name
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL, err_msg=name)
    return dict(zip(names, actual, strict=True))


class _Fn(nn.Module):
    """A module running a plain function, to export functional code."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Residual(nn.Module):
    """conv-bn-relu-conv-bn plus the identity, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def _activations(x: torch.Tensor) -> torch.Tensor:
    parts = [
        F.leaky_relu(x, 0.2),
        F.elu(x, 0.7),
        F.selu(x),
        F.celu(x, 1.3),
        F.softplus(x),
        F.softsign(x),
        F.hardsigmoid(x),
        F.hardswish(x),
        F.mish(x),
        F.relu6(3 * x),
        x.clamp(-0.5, 0.5),
        torch.sqrt(x.abs() + 1),
        torch.exp(x) - torch.log(x.abs() + 1),
        torch.reciprocal(x.abs() + 2),
        x**2 + x**3,
        torch.erf(x),
        torch.floor(x) + torch.ceil(x),
        torch.maximum(x, -x) - torch.minimum(x, 0.5 * x),
    ]
    return torch.cat(parts, dim=1)


def _tensor_ops(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    image = x.reshape(b, 2, 4, 6)
    parts = [
        image.permute(0, 3, 1, 2).reshape(b, -1),
        x[:, 1:40:3],
        x.flip(-1)[:, ::4],
        torch.cat(torch.chunk(x, 3, dim=1)[::-1], dim=1),
        x.unsqueeze(1).squeeze(1) * torch.arange(x.shape[1]).float(),
        image.mean(dim=(2, 3)) + image.sum(2).amax(-1) - image.amin(dim=1).prod(-1)[:, :2],
        image[:, :1].expand(b, 3, 4, 6).reshape(b, -1),
        image.repeat(1, 1, 2, 1).flatten(1),
        torch.index_select(x, 1, torch.tensor([5, 1, 3])),
        torch.einsum("bij,bjk->bik", image[:, 0], image[:, 1].transpose(1, 2)).flatten(1),
        torch.where(x > 0, x, 0.5 * x) * (x <= 0.3).float(),
        x.argmax(dim=1, keepdim=True).float() + torch.zeros(b, 1),
        F.instance_norm(image, eps=1e-3).flatten(1),
        F.pad(image, (1, 2, 2, 1), mode="reflect").flatten(1),
        F.pad(image, (2, 0, 1, 1), mode="replicate").flatten(1),
        F.adaptive_max_pool2d(image, 1).flatten(1),
        x.softmax(dim=1) + x.log_softmax(dim=1),
    ]
    return torch.cat(parts, dim=1)


def _upsampling() -> nn.Module:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(3, 4, 3),
        nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=False),
        nn.Upsample(size=(9, 11), mode="bilinear", align_corners=True),
        _Fn(lambda x: F.interpolate(x, scale_factor=0.5, mode="nearest")),
        nn.Upsample(size=(7, 5), mode="nearest"),
    )


class _Transformer(nn.Module):
    """A causal pre-norm encoder layer (GELU), then multi-head self-attention."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            16, 2, 32, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        h = self.encoder(x, src_mask=mask, is_causal=True)
        return self.attention(h, h, h, need_weights=False)[0]


def _audio() -> nn.Module:
    """A wav2vec2-style feature extractor: strided Conv1d, GroupNorm, padding modes."""
    return nn.Sequential(
        nn.Conv1d(1, 8, 10, stride=5),
        nn.GroupNorm(4, 8),
        nn.GELU(),
        nn.Conv1d(8, 8, 3, padding=1, padding_mode="reflect"),
        nn.InstanceNorm1d(8, affine=True),
        nn.GELU(approximate="tanh"),
        nn.Conv1d(8, 8, 3, padding=2, dilation=2, padding_mode="replicate"),
        nn.Conv1d(8, 4, 3, padding=1, padding_mode="circular"),
    )


def _volumes() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=(1, 0, 1), stride=(1, 2, 1)),
        nn.MaxPool3d(2, ceil_mode=True),
        _Fn(lambda x: x.flatten(2)),
        nn.Conv1d(4, 6, 3, padding=2, dilation=2),
        nn.AvgPool1d(3, stride=2, padding=1),
        nn.MaxPool1d(2),
    )


# name -> (model factory, one sample's shape); BatchNorm statistics get randomised.
EXPORTED = {
    "mlp": (
        lambda: nn.Sequential(
            nn.Linear(12, 16),
            nn.Tanh(),
            nn.Linear(16, 16),
            nn.Sigmoid(),
            nn.Linear(16, 16),
            nn.GELU(),
            nn.Linear(16, 16),
            nn.GELU(approximate="tanh"),
            nn.Dropout(0.3),
            nn.Linear(16, 6),
            nn.LayerNorm(6),
            nn.Softmax(dim=-1),
        ),
        (12,),
    ),
    "cnn": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(8, 8, 3),
            nn.BatchNorm2d(8),
            nn.PReLU(8),
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
            nn.AvgPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 4),
        ),
        (3, 16, 16),
    ),
    "residual": (lambda: nn.Sequential(nn.Conv2d(3, 6, 1), _Residual(6), _Residual(6)), (3, 8, 8)),
    "conv_variants": (
        lambda: nn.Sequential(
            _Fn(lambda x: F.pad(x, (1, 2, 0, 1))),
            nn.Conv2d(4, 8, 3, stride=2, groups=2),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8),
            nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
            nn.Conv2d(8, 6, (1, 3), stride=(2, 1), padding=(0, 1)),
        ),
        (4, 21, 20),
    ),
    "volumes": (_volumes, (2, 6, 8, 7)),
    "conv_transpose": (
        lambda: nn.Sequential(
            nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(6, 4, 3, stride=(1, 2), padding=(0, 1), groups=2, dilation=2),
        ),
        (4, 5, 6),
    ),
    "upsampling": (_upsampling, (3, 6, 5)),
    "sequence": (
        lambda: nn.Sequential(
            nn.Linear(8, 10),
            nn.LayerNorm(10),
            nn.ReLU(),
            nn.LayerNorm(10, elementwise_affine=False),
        ),
        (5, 8),
    ),
    "activations": (lambda: nn.Sequential(nn.Linear(6, 6), _Fn(_activations)), (6,)),
    "tensor_ops": (lambda: _Fn(_tensor_ops), (48,)),
    "transformer": (_Transformer, (5, 16)),
    "audio": (_audio, (1, 120)),
}
#: Blocks of today's transformer and audio models: exported at opsets 17 and 20 (a causal
#: mask needs Trilu, opset 14).
SEQUENCE_MODELS = ("transformer", "audio")


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = EXPORTED[name][0]()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean = torch.rand(module.num_features) - 0.5
            module.running_var = torch.rand(module.num_features) * 1.5 + 0.5
    return model.eval()


# ---------------------------------------------------------------- exported models


EXPORT_CASES = [
    *[(name, opset) for name in EXPORTED if name not in SEQUENCE_MODELS for opset in (13, 17)],
    *[(name, opset) for name in SEQUENCE_MODELS for opset in (17, 20)],
    ("tensor_ops", 12),  # Squeeze/Unsqueeze/Split axes as attributes, 2-D coerced softmax
    ("upsampling", 11),  # Resize with roi and empty scales inputs
    ("mlp", 20),  # Gelu operator
]


@pytest.mark.parametrize(("name", "opset"), EXPORT_CASES)
def test_exported_model_matches_onnxruntime_and_torch(name: str, opset: int) -> None:
    model = _build(name)
    shape = EXPORTED[name][1]
    onnx_model = _export(model, torch.randn(EXPORT_BATCH, *shape), opset)
    x = torch.randn(RUN_BATCH, *shape)
    values = _assert_matches_onnxruntime(onnx_model, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(values["y"], model(x), rtol=RTOL, atol=ATOL)


def _assert_gradient_matches(model: nn.Module, onnx_model: onnx.ModelProto,
                             shape: tuple[int, ...]) -> None:
    """The interpreter's input gradient of a random weighting of the output equals the
    torch module's (rtol and atol 1e-4)."""
    x = torch.randn(RUN_BATCH, *shape)
    with torch.no_grad():
        weights = torch.randn_like(model(x))
    x_onnx = x.clone().requires_grad_()
    (y,) = OnnxTorchGraph(onnx_model)({"x": x_onnx}, ["y"])
    (y * weights).sum().backward()
    x_torch = x.clone().requires_grad_()
    (model(x_torch) * weights).sum().backward()
    torch.testing.assert_close(x_onnx.grad, x_torch.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn", *SEQUENCE_MODELS])
def test_gradient_matches_torch_model(name: str) -> None:
    model, shape = _build(name), EXPORTED[name][1]
    _assert_gradient_matches(model, _export(model, torch.randn(EXPORT_BATCH, *shape), 20), shape)


@pytest.mark.slow
@pytest.mark.parametrize("opset", [20, 23])
@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_default_exporter_output_matches_onnxruntime_and_torch(name: str, opset: int) -> None:
    """torch's default (dynamo) exporter: attention decomposed (Trilu, Where, Equal, Expand)
    at opset 20, the Attention and GroupNormalization operators at 23; values of every node
    against onnxruntime, the output and its gradient against the module."""
    pytest.importorskip("onnxscript")
    model, shape = _build(name), EXPORTED[name][1]
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(folder) / "model.onnx"
        torch.onnx.export(model, (torch.randn(EXPORT_BATCH, *shape),), path, dynamo=True,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
        onnx_model = onnx.load(path)
    operators = {node.op_type for node in onnx_model.graph.node}
    if opset >= 23:
        assert operators & {"Attention", "GroupNormalization"}, operators
    x = torch.randn(RUN_BATCH, *shape)
    values = _assert_matches_onnxruntime(onnx_model, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(values["y"], model(x), rtol=RTOL, atol=ATOL)
    _assert_gradient_matches(model, onnx_model, shape)


# ---------------------------------------------------------------- hand-built graphs

_rng = np.random.default_rng(0)
node = helper.make_node


def _floats(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape).astype(np.float32)


def _int64s(values: object) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _float32s(values: object) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _graph(
    opset: int,
    nodes: list[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray],
) -> onnx.ModelProto:
    """A model of ``nodes``; graph outputs are added by :func:`_expose_all_values`."""
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape
        )
        for name, value in feeds.items()
    ]
    tensors = [numpy_helper.from_array(value, name) for name, value in initializers.items()]
    graph = helper.make_graph(nodes, "case", inputs, [], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


HAND_BUILT = [
    pytest.param(
        13,
        [
            node("Clip", ["x", "low", "high"], ["both"]),
            node("Clip", ["x", "", "high"], ["high_only"]),
            node("Clip", ["x", "low"], ["low_only"]),
            node("Clip", ["x"], ["neither"]),
        ],
        {"x": _floats(3, 4)},
        {"low": _float32s(-0.5), "high": _float32s(0.7)},
        id="clip-inputs",
    ),
    pytest.param(
        10,
        [
            node("Clip", ["x"], ["both"], min=-0.3, max=0.4),
            node("Clip", ["x"], ["high_only"], max=0.1),
        ],
        {"x": _floats(3, 4)},
        {},
        id="clip-attributes",
    ),
    pytest.param(
        11,
        [
            node("Squeeze", ["x"], ["squeezed"], axes=[1]),
            node("Unsqueeze", ["squeezed"], ["unsqueezed"], axes=[0, -1]),
            node("Squeeze", ["unsqueezed"], ["all_squeezed"]),
            node("Unsqueeze", ["x"], ["negative"], axes=[-2]),
        ],
        {"x": _floats(2, 1, 3)},
        {},
        id="squeeze-unsqueeze-attributes",
    ),
    pytest.param(
        13,
        [
            node("Squeeze", ["x", "one"], ["squeezed"]),
            node("Unsqueeze", ["squeezed", "outer"], ["unsqueezed"]),
            node("Squeeze", ["unsqueezed"], ["all_squeezed"]),
        ],
        {"x": _floats(2, 1, 3)},
        {"one": _int64s([1]), "outer": _int64s([0, -1])},
        id="squeeze-unsqueeze-inputs",
    ),
    pytest.param(
        13,
        [
            node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=0),
            node("ReduceMax", ["x"], ["max"], axes=[-1]),
            node("ReduceMin", ["x"], ["min_all"], keepdims=0),
            node("ReduceProd", ["x"], ["prod"], axes=[0, 2]),
            node("ReduceSum", ["x", "axis"], ["sum"]),
            node("ReduceSum", ["x"], ["sum_noop"], noop_with_empty_axes=1),
            node("ReduceSum", ["x"], ["sum_all"], keepdims=0),
        ],
        {"x": _floats(2, 3, 4)},
        {"axis": _int64s([1])},
        id="reduce-axes-attribute",
    ),
    pytest.param(
        18,
        [
            node("ReduceMean", ["x", "axis"], ["mean"]),
            node("ReduceMax", ["x", "outer"], ["max"], keepdims=0),
            node("ReduceMin", ["x", "axis"], ["min"]),
            node("ReduceProd", ["x", "outer"], ["prod"]),
            node("ReduceSum", ["x"], ["sum_all"]),
            node("ReduceMean", ["x"], ["mean_noop"], noop_with_empty_axes=1),
        ],
        {"x": _floats(2, 3, 4)},
        {"axis": _int64s([1]), "outer": _int64s([0, -1])},
        id="reduce-axes-input",
    ),
    pytest.param(
        13,
        [
            node("Pad", ["x", "pads", "value"], ["constant"]),
            node("Pad", ["x", "pads"], ["reflect"], mode="reflect"),
            node("Pad", ["x", "pads"], ["edge"], mode="edge"),
            node("Pad", ["x", "crop"], ["cropped"]),
        ],
        {"x": _floats(2, 3, 5, 4)},
        {
            "pads": _int64s([0, 0, 1, 2, 0, 1, 2, 1]),
            "crop": _int64s([0, 0, -1, 1, 0, 0, 1, -2]),
            "value": _float32s(1.5),
        },
        id="pad-modes",
    ),
    pytest.param(
        19,
        [
            node("Pad", ["x", "pads"], ["wrap"], mode="wrap"),
            node("Pad", ["x", "axis_pads", "", "axes"], ["constant_axes"]),
            node("Pad", ["x", "axis_pads", "", "axes"], ["edge_axes"], mode="edge"),
        ],
        {"x": _floats(2, 3, 5, 4)},
        {
            "pads": _int64s([0, 0, 2, 1, 0, 0, 1, 3]),
            "axis_pads": _int64s([1, 2, 0, 1]),
            "axes": _int64s([-1, 2]),
        },
        id="pad-wrap-and-axes",
    ),
    pytest.param(
        10,
        [
            node("Pad", ["x"], ["constant"], pads=[0, 1, 2, 0, 2, 1], value=-2.0),
            node("Pad", ["x"], ["reflect"], pads=[0, 1, 2, 0, 2, 1], mode="reflect"),
        ],
        {"x": _floats(2, 4, 5)},
        {},
        id="pad-attributes",
    ),
    pytest.param(
        13,
        [
            node("Split", ["x", "sizes"], ["first", "rest"], axis=1),
            node("Split", ["x"], ["a", "b", "c"], axis=2),
        ],
        {"x": _floats(2, 4, 6)},
        {"sizes": _int64s([1, 3])},
        id="split-input",
    ),
    pytest.param(
        11,
        [
            node("Split", ["x"], ["first", "rest"], axis=1, split=[3, 1]),
            node("Split", ["x"], ["a", "b"], axis=-1),
        ],
        {"x": _floats(2, 4, 6)},
        {},
        id="split-attribute",
    ),
    pytest.param(
        18,
        [node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)],
        {"x": _floats(2, 7)},
        {},
        id="split-num-outputs",
    ),
    pytest.param(
        13,
        [
            node("Greater", ["x", "y"], ["greater"]),
            node("Less", ["x", "zero"], ["negative"]),
            node("And", ["greater", "negative"], ["both"]),
            node("Not", ["negative"], ["non_negative"]),
            node("Or", ["greater", "non_negative"], ["either"]),
            node("Where", ["both", "x", "y"], ["picked"]),
            node("Where", ["either", "x", "zero"], ["picked_scalar"]),
            node("Floor", ["x"], ["x_floor"]),
            node("Floor", ["y"], ["y_floor"]),
            node("Equal", ["x_floor", "y_floor"], ["equal"]),
            node("GreaterOrEqual", ["x", "y"], ["greater_equal"]),
            node("LessOrEqual", ["x", "y"], ["less_equal"]),
        ],
        {"x": _floats(3, 4), "y": _floats(3, 4)},
        {"zero": _float32s(0.0)},
        id="logic-and-where",
    ),
    pytest.param(
        13,
        [
            node(
                "Resize",
                ["x", "", "s_up"],
                ["n_asym"],
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            ),
            node("Resize", ["x", "", "", "z_mixed"], ["n_half"]),
            node(
                "Resize",
                ["x", "", "", "z_up"],
                ["n_corners"],
                coordinate_transformation_mode="align_corners",
                nearest_mode="round_prefer_ceil",
            ),
            node(
                "Resize",
                ["x", "", "s_mixed"],
                ["n_tf"],
                coordinate_transformation_mode="tf_half_pixel_for_nn",
                nearest_mode="ceil",
            ),
            node("Resize", ["x", "", "", "z_linear"], ["l_half"], mode="linear"),
            node(
                "Resize",
                ["x", "", "s_double"],
                ["l_corners"],
                mode="linear",
                coordinate_transformation_mode="align_corners",
            ),
            node(
                "Resize",
                ["x", "", "s_mixed"],
                ["l_asym"],
                mode="linear",
                coordinate_transformation_mode="asymmetric",
            ),
            node(
                "Resize",
                ["x", "", "", "z_single"],
                ["l_torch"],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
            ),
        ],
        {"x": _floats(1, 2, 4, 5)},
        {
            "s_up": _float32s([1, 1, 2, 1.5]),
            "s_double": _float32s([1, 1, 2, 2]),
            "s_mixed": _float32s([1, 1, 1.5, 0.6]),
            "z_mixed": _int64s([1, 2, 7, 3]),
            "z_up": _int64s([1, 2, 9, 8]),
            "z_linear": _int64s([1, 2, 3, 8]),
            "z_single": _int64s([1, 2, 1, 6]),
        },
        id="resize",
    ),
    pytest.param(
        19,
        [
            node(
                "Resize",
                ["x", "", "", "sizes"],
                ["symmetric"],
                axes=[2, 3],
                mode="linear",
                coordinate_transformation_mode="half_pixel_symmetric",
            ),
            node("Resize", ["x", "", "scales"], ["nearest_axes"], axes=[3, 2]),
        ],
        {"x": _floats(1, 2, 4, 5)},
        {"sizes": _int64s([6, 3]), "scales": _float32s([2.0, 0.5])},
        id="resize-axes",
    ),
    pytest.param(
        13,
        [
            node("Slice", ["x", "starts", "ends", "axes", "steps"], ["reversed"]),
            node("Slice", ["x", "start", "end"], ["default_axes"]),
            node("Slice", ["x", "starts", "ends"], ["clamped"]),
        ],
        {"x": _floats(4, 6, 5)},
        {
            "starts": _int64s([-1, 5]),
            "ends": _int64s([-(2**63), 0]),
            "axes": _int64s([1, -1]),
            "steps": _int64s([-2, -1]),
            "start": _int64s([1]),
            "end": _int64s([2**62]),
        },
        id="slice-inputs",
    ),
    pytest.param(
        9,
        [
            node("Slice", ["x"], ["axes"], starts=[1, 0], ends=[3, -1], axes=[0, 2]),
            node("Slice", ["x"], ["leading"], starts=[1], ends=[1000]),
        ],
        {"x": _floats(4, 6, 5)},
        {},
        id="slice-attributes",
    ),
    pytest.param(
        13,
        [
            node("Gemm", ["a", "b", "c"], ["full"], alpha=0.5, beta=2.0, transA=1, transB=1),
            node("Gemm", ["a2", "b2"], ["no_bias"]),
            node("MatMul", ["x", "b2"], ["batched"]),
        ],
        {"a": _floats(4, 3), "x": _floats(2, 3, 4)},
        {"b": _floats(5, 4), "c": _floats(5), "a2": _floats(3, 4), "b2": _floats(4, 5)},
        id="gemm-matmul",
    ),
    pytest.param(
        13,
        [
            node(
                "MaxPool",
                ["x"],
                ["max_ceil"],
                kernel_shape=[3, 3],
                pads=[0, 1, 2, 0],
                strides=[2, 2],
                ceil_mode=1,
            ),
            node(
                "MaxPool",
                ["x"],
                ["max_upper"],
                kernel_shape=[3, 2],
                strides=[2, 2],
                auto_pad="SAME_UPPER",
            ),
            node(
                "MaxPool",
                ["x"],
                ["max_lower"],
                kernel_shape=[2, 3],
                strides=[2, 2],
                auto_pad="SAME_LOWER",
            ),
            node(
                "MaxPool",
                ["x"],
                ["max_dilated"],
                kernel_shape=[2, 3],
                pads=[1, 2, 1, 0],
                dilations=[2, 2],
            ),
            node(
                "AveragePool",
                ["x"],
                ["avg_include"],
                kernel_shape=[3, 3],
                pads=[1, 0, 2, 1],
                strides=[2, 3],
                ceil_mode=1,
                count_include_pad=1,
            ),
            node(
                "AveragePool",
                ["x"],
                ["avg_lower"],
                kernel_shape=[3, 3],
                strides=[2, 2],
                auto_pad="SAME_LOWER",
            ),
            node("AveragePool", ["x"], ["avg_floor"], kernel_shape=[2, 2], strides=[3, 3]),
            node("GlobalMaxPool", ["x"], ["global_max"]),
            node("GlobalAveragePool", ["x"], ["global_avg"]),
            node(
                "MaxPool",
                ["x1d"],
                ["max_1d"],
                kernel_shape=[3],
                pads=[2, 1],
                strides=[2],
                ceil_mode=1,
            ),
            # ceil_mode drops a last window that would start in the end padding.
            node(
                "MaxPool",
                ["x4"],
                ["max_start_in_padding"],
                kernel_shape=[2],
                pads=[0, 1],
                strides=[2],
                ceil_mode=1,
            ),
            node(
                "AveragePool",
                ["x4"],
                ["avg_start_in_padding"],
                kernel_shape=[2],
                pads=[0, 1],
                strides=[2],
                ceil_mode=1,
                count_include_pad=1,
            ),
        ],
        {"x": _floats(1, 2, 7, 8), "x1d": _floats(1, 2, 9), "x4": _floats(1, 2, 4)},
        {},
        id="pooling",
    ),
    pytest.param(
        13,
        [
            node(
                "Conv",
                ["x", "w", "b"],
                ["same_lower"],
                auto_pad="SAME_LOWER",
                strides=[2, 2],
                group=2,
            ),
            node("Conv", ["x", "w"], ["asymmetric"], pads=[1, 0, 0, 2], dilations=[1, 2], group=2),
            node("Conv", ["x", "w_full"], ["valid"], auto_pad="VALID", strides=[1, 2]),
            node("Conv", ["x", "w", "b"], ["same_upper"], auto_pad="SAME_UPPER", group=2),
        ],
        {"x": _floats(1, 4, 7, 8)},
        {"w": _floats(6, 2, 3, 3), "b": _floats(6), "w_full": _floats(4, 4, 2, 2)},
        id="conv",
    ),
    pytest.param(
        13,
        [
            node(
                "ConvTranspose",
                ["x", "w", "b"],
                ["padded"],
                pads=[0, 1, 1, 2],
                output_padding=[1, 0],
                strides=[2, 3],
                group=2,
                dilations=[1, 2],
            ),
            node("ConvTranspose", ["x", "w_plain"], ["plain"]),
            node(
                "ConvTranspose",
                ["x1d", "w1d"],
                ["one_d"],
                strides=[2],
                pads=[1, 0],
                output_padding=[1],
            ),
        ],
        {"x": _floats(1, 4, 3, 4), "x1d": _floats(1, 4, 5)},
        {
            "w": _floats(4, 3, 3, 2),
            "b": _floats(6),
            "w_plain": _floats(4, 5, 2, 2),
            "w1d": _floats(4, 2, 3),
        },
        id="conv-transpose",
    ),
    pytest.param(
        11,
        [
            node("Softmax", ["x"], ["softmax"], axis=1),
            node("LogSoftmax", ["x"], ["log_softmax"]),
            node("Softmax", ["x"], ["last"], axis=-1),
        ],
        {"x": _floats(2, 3, 4)},
        {},
        id="softmax-coerced-2d",
    ),
    pytest.param(
        13,
        [node("Softmax", ["x"], ["softmax"], axis=1), node("LogSoftmax", ["x"], ["log_softmax"])],
        {"x": _floats(2, 3, 4)},
        {},
        id="softmax-axis",
    ),
    pytest.param(
        15,
        [
            node("Shape", ["x"], ["middle"], start=1, end=-1),
            node("Shape", ["x"], ["shape"]),
            node("Size", ["x"], ["size"]),
            node("Gather", ["shape", "last"], ["last_dim"]),
            node("Concat", ["middle", "minus_one"], ["new_shape"], axis=0),
            node("Reshape", ["x", "new_shape"], ["reshaped"]),
            node("Reshape", ["x", "keep_first"], ["kept"]),
            node("Flatten", ["x"], ["flat_2"], axis=2),
            node("Flatten", ["x"], ["flat_0"], axis=0),
            node("Flatten", ["x"], ["flat_last"], axis=-1),
            node("Transpose", ["x"], ["swapped"], perm=[1, 0, 2]),
            node("Transpose", ["x"], ["reversed"]),
            node("Gather", ["x", "indices"], ["gathered"], axis=1),
            node("ConstantOfShape", ["middle"], ["zeros"]),
            node(
                "ConstantOfShape",
                ["shape"],
                ["sevens"],
                value=numpy_helper.from_array(_int64s([7])),
            ),
            node("Expand", ["column", "expand_to"], ["expanded"]),
            node("Tile", ["x", "repeats"], ["tiled"]),
            node("Range", ["start", "limit", "delta"], ["float_range"]),
            node("Range", ["i_start", "i_limit", "i_delta"], ["int_range"]),
            node("Cast", ["x"], ["as_int"], to=TensorProto.INT32),
            node("Cast", ["x"], ["as_double"], to=TensorProto.DOUBLE),
            node("Cast", ["x"], ["as_bool"], to=TensorProto.BOOL),
            node("Einsum", ["x", "right"], ["product"], equation="bij, bjk -> bik"),
            node("Einsum", ["square"], ["diagonal"], equation="ii->i"),
            node("Floor", ["x"], ["floored"]),
            node("ArgMax", ["floored"], ["arg_last"], axis=1, select_last_index=1),
            node("ArgMin", ["x"], ["arg_min"], axis=-1, keepdims=0),
            node("Identity", ["x"], ["same"]),
            node("Constant", [], ["floats"], value_floats=[1.0, 2.0, 3.0, 4.0]),
            node("Constant", [], ["tensor"], value=numpy_helper.from_array(_floats(3, 1))),
            node("Constant", [], ["int"], value_int=4),
            node("Add", ["x", "floats"], ["plus_floats"]),
            node("Mul", ["x", "tensor"], ["times_tensor"]),
        ],
        {"x": _floats(2, 3, 4)},
        {
            "last": _int64s(-1),
            "minus_one": _int64s([-1]),
            "keep_first": _int64s([0, -1]),
            "indices": _int64s([[0, -1], [1, 2]]),
            "column": _floats(3, 1),
            "expand_to": _int64s([2, 1, 4]),
            "repeats": _int64s([1, 2, 1]),
            "start": _float32s(1.0),
            "limit": _float32s(4.0),
            "delta": _float32s(0.5),
            "i_start": _int64s(0),
            "i_limit": _int64s(7),
            "i_delta": _int64s(3),
            "right": _floats(2, 4, 5),
            "square": _floats(3, 3),
        },
        id="shapes-and-indexing",
    ),
    pytest.param(
        17,
        [
            node(
                "BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["batch"], epsilon=1e-3
            ),
            node("InstanceNormalization", ["x", "scale", "bias"], ["instance"], epsilon=1e-4),
            node(
                "LayerNormalization",
                ["x", "l_scale", "l_bias"],
                ["layer", "l_mean", "l_inv_std"],
                axis=2,
            ),
            node("LayerNormalization", ["x", "last_scale"], ["layer_last"]),
        ],
        {"x": _floats(2, 3, 4, 5)},
        {
            "scale": _floats(3),
            "bias": _floats(3),
            "mean": _floats(3),
            "var": np.abs(_floats(3)) + 0.5,
            "l_scale": _floats(4, 5),
            "l_bias": _floats(4, 5),
            "last_scale": _floats(5),
        },
        id="normalization",
    ),
    pytest.param(
        20,
        [
            node("Gelu", ["x"], ["gelu_tanh"], approximate="tanh"),
            node("Gelu", ["x"], ["gelu"]),
            node("HardSwish", ["x"], ["hard_swish"]),
            node("Mish", ["x"], ["mish"]),
            node("Celu", ["x"], ["celu"], alpha=0.5),
            node("Selu", ["x"], ["selu"], alpha=1.5, gamma=1.1),
            node("HardSigmoid", ["x"], ["hard_sigmoid"], alpha=0.3, beta=0.4),
            node("Elu", ["x"], ["elu"], alpha=0.8),
            node("LeakyRelu", ["x"], ["leaky"], alpha=0.05),
            node("PRelu", ["x", "slope"], ["prelu"]),
            node("Softplus", ["x"], ["softplus"]),
            node("Softsign", ["x"], ["softsign"]),
            node("Dropout", ["x"], ["dropped", "mask"]),
            node("Min", ["x", "y", "z"], ["min"]),
            node("Max", ["x", "y", "z"], ["max"]),
            node("Sum", ["x", "y", "z"], ["sum"]),
            node("Mean", ["x", "y", "z"], ["mean"]),
            node("Div", ["numerator", "denominator"], ["int_div"]),
            node("Abs", ["x"], ["abs"]),
            node("Abs", ["y"], ["y_abs"]),
            node("Add", ["abs", "y_abs"], ["positive"]),
            node("Pow", ["positive", "y"], ["pow"]),
            node("Sqrt", ["positive"], ["sqrt"]),
            node("Log", ["positive"], ["log"]),
            node("Reciprocal", ["positive"], ["reciprocal"]),
            node("Div", ["x", "positive"], ["div"]),
            node("Exp", ["x"], ["exp"]),
            node("Neg", ["x"], ["neg"]),
            node("Ceil", ["x"], ["ceil"]),
            node("Erf", ["x"], ["erf"]),
            node("Sigmoid", ["x"], ["sigmoid"]),
            node("Tanh", ["x"], ["tanh"]),
            node("Relu", ["x"], ["relu"]),
            node("Sub", ["x", "y"], ["sub"]),
            node("Mul", ["x", "y"], ["mul"]),
        ],
        {"x": _floats(2, 3, 4), "y": _floats(2, 3, 4)},
        {
            "z": _floats(4),
            "slope": _floats(3, 1),
            "numerator": _int64s([-7, 7, -8, 9]),
            "denominator": _int64s([2, -2, 3, 4]),
        },
        id="elementwise",
    ),
]


def _with_holes(*shape: int) -> np.ndarray:
    """Random floats with NaN, +inf and -inf at fixed places."""
    values = _floats(*shape)
    flat = values.reshape(-1)
    flat[[1, 5]], flat[[2, 7]], flat[3] = np.nan, np.inf, -np.inf
    return values


def _hann(size: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / size)).astype(np.float32)


# The operators today's exporters emit for transformer and audio blocks (torch 2.13's
# dynamo and TorchScript exporters on transformers' BERT, GPT-2, ViT, Llama, RoBERTa,
# wav2vec2 and on nn.TransformerEncoderLayer, nn.MultiheadAttention, GroupNorm, stft).
SEQUENCE_OPS = [
    pytest.param(
        20,
        [
            node("IsNaN", ["holes"], ["nan"]),
            node("IsInf", ["holes"], ["inf"]),
            node("IsInf", ["holes"], ["positive_inf"], detect_negative=0),
            node("IsInf", ["holes"], ["negative_inf"], detect_positive=0),
            node("Where", ["nan", "zero", "holes"], ["filled"]),
            node("Trilu", ["x"], ["upper"]),
            node("Trilu", ["x", "minus_one"], ["strictly_lower"], upper=0),
            node("Trilu", ["flags", "one"], ["flags_above"]),
            node("Equal", ["upper", "zero"], ["below"]),
            node("Where", ["below", "minus_inf", "x"], ["causal_scores"]),
            node("Softmax", ["causal_scores"], ["causal_weights"]),
            node("Not", ["below"], ["kept"]),
            node("Cast", ["kept"], ["kept_int"], to=TensorProto.INT64),
            node("CumSum", ["kept_int", "last"], ["positions"], exclusive=1),
            node("CumSum", ["x", "one"], ["cumsum"]),
            node("CumSum", ["x", "last"], ["cumsum_exclusive_reverse"], exclusive=1, reverse=1),
            node("CumSum", ["x", "one"], ["cumsum_reverse"], reverse=1),
            node("Mod", ["positions", "three"], ["mod"]),
            node("Mod", ["signed", "minus_three"], ["mod_signed"]),
            node("Mod", ["x", "half"], ["fmod"], fmod=1),
            node("Mod", ["signed", "minus_three"], ["fmod_int"], fmod=1),
            node("Sin", ["x"], ["sin"]),
            node("Cos", ["x"], ["cos"]),
            node("Sign", ["halves"], ["sign"]),
            node("Round", ["halves"], ["round"]),
        ],
        {"x": _floats(2, 4, 4), "holes": _with_holes(2, 5)},
        {
            "zero": _float32s(0.0),
            "minus_inf": _float32s(-np.inf),
            "half": _float32s(0.5),
            "one": _int64s(1),
            "minus_one": _int64s(-1),
            "last": _int64s(-1),
            "three": _int64s(3),
            "minus_three": _int64s(-3),
            "signed": _int64s([-7, -3, -1, 0, 2, 5, 9]),
            "flags": _rng.random((3, 4)) > 0.3,
            "halves": _float32s([-2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 0.3, -0.7]),
        },
        id="masking-and-elementwise",
    ),
    pytest.param(
        13,
        [
            node("GatherElements", ["x", "rows"], ["along_rows"], axis=1),
            node("GatherElements", ["x", "columns"], ["along_last"], axis=-1),
            node("GatherND", ["x", "pairs"], ["pairs_picked"]),
            node("GatherND", ["x", "per_sample"], ["per_sample_picked"], batch_dims=1),
            node("GatherND", ["x", "points"], ["points_picked"]),
        ],
        {"x": _floats(2, 3, 4)},
        {
            "rows": _int64s([[[0, 2, -1, 1]], [[1, 0, 0, -3]]]),
            "columns": _int64s([[[3, -1], [0, 2], [1, 1]], [[-4, 0], [2, 3], [0, 0]]]),
            "pairs": _int64s([[0, 1], [1, -1]]),
            "per_sample": _int64s([[[2], [0]], [[1], [-2]]]),
            "points": _int64s([[[0, 0, 1]], [[1, 2, -1]]]),
        },
        id="gather-elements-nd",
    ),
    pytest.param(
        13,
        [
            node("ReduceL1", ["x"], ["l1"], axes=[1]),
            node("ReduceL2", ["x"], ["l2"], axes=[-1], keepdims=0),
            node("ReduceSumSquare", ["x"], ["sum_square"]),
            node("ReduceLogSum", ["positive"], ["log_sum"], axes=[2]),
            node("ReduceLogSumExp", ["x"], ["log_sum_exp"], axes=[0, 2]),
        ],
        {"x": _floats(2, 3, 4), "positive": np.abs(_floats(2, 3, 4)) + 0.5},
        {},
        id="reduce-norms-axes-attribute",
    ),
    pytest.param(
        18,
        [
            node("ReduceL1", ["x", "outer"], ["l1"], keepdims=0),
            node("ReduceL2", ["x", "middle"], ["l2"]),
            node("ReduceSumSquare", ["x", "middle"], ["sum_square"]),
            node("ReduceLogSumExp", ["x"], ["log_sum_exp"]),
        ],
        {"x": _floats(2, 3, 4)},
        {"outer": _int64s([0, -1]), "middle": _int64s([1])},
        id="reduce-norms-axes-input",
    ),
    pytest.param(
        18,
        [
            node(
                "GroupNormalization",
                ["x", "group_scale", "group_bias"],
                ["grouped"],
                num_groups=2,
                epsilon=1e-3,
            )
        ],
        {"x": _floats(2, 4, 3, 5)},
        {"group_scale": _floats(2), "group_bias": _floats(2)},
        id="group-normalization-per-group-18",
    ),
    pytest.param(
        21,
        [
            node(
                "GroupNormalization",
                ["x", "scale", "bias"],
                ["grouped"],
                num_groups=2,
                stash_type=1,
                epsilon=1e-5,
            ),
            node("GroupNormalization", ["x", "scale", "bias"], ["instance"], num_groups=4),
        ],
        {"x": _floats(2, 4, 7)},
        {"scale": _floats(4), "bias": _floats(4)},
        id="group-normalization-per-channel-21",
    ),
    pytest.param(
        23,
        [
            node("RMSNormalization", ["x", "last_scale"], ["last"], epsilon=1e-6, stash_type=1),
            node("RMSNormalization", ["x", "scale"], ["from_axis_1"], axis=1, epsilon=1e-3),
        ],
        {"x": _floats(2, 3, 5)},
        {"last_scale": _floats(5), "scale": _floats(3, 5)},
        id="rms-normalization",
    ),
    pytest.param(
        23,
        [
            node("Attention", ["q", "k", "v"], ["plain"]),
            node("Attention", ["q", "k", "v"], ["causal"], is_causal=1, softcap=0.0,
                 qk_matmul_output_mode=0),
            node("Attention", ["q", "k", "v", "bool_mask"], ["masked"], scale=0.5),
            node("Attention", ["q", "k", "v", "float_mask"], ["additive"], softmax_precision=1),
            node("Attention", ["q", "k", "v", "bool_mask"], ["masked_causal"], is_causal=1),
            node("Attention", ["q", "k_grouped", "v_grouped"], ["grouped"]),
            node("Attention", ["q", "k", "v", "", "past_k", "past_v"],
                 ["cached", "present_k", "present_v"], is_causal=1),
            node("Attention", ["q", "k", "v"], ["capped"], softcap=0.5),
            node("Attention", ["q", "k", "v", "blocking_mask"], ["empty_rows"]),
        ],
        {"q": _floats(2, 4, 3, 8)},
        {
            "k": _floats(2, 4, 5, 8),
            "v": _floats(2, 4, 5, 6),
            "k_grouped": _floats(2, 2, 5, 8),
            "v_grouped": _floats(2, 2, 5, 6),
            "bool_mask": _rng.random((3, 5)) > 0.3,
            "float_mask": _floats(2, 1, 3, 5),
            "past_k": _floats(2, 4, 2, 8),
            "past_v": _floats(2, 4, 2, 6),
            "blocking_mask": np.array([[True] * 5, [False] * 5, [True, False] * 2 + [True]]),
        },
        id="attention-4d",
    ),
    pytest.param(
        23,
        [node("Attention", ["q", "k", "v"], ["y"], q_num_heads=4, kv_num_heads=2, is_causal=1)],
        {"q": _floats(2, 5, 16)},
        {"k": _floats(2, 5, 8), "v": _floats(2, 5, 12)},
        id="attention-3d-grouped",
    ),
    pytest.param(
        17,
        [
            node("STFT", ["signal", "step", "window"], ["one_sided"]),
            node("STFT", ["signal", "step", "", "length"], ["no_window"]),
            node("STFT", ["complex_signal", "step", "window", "sixteen"], ["two_sided"],
                 onesided=0),
        ],
        {"signal": _floats(2, 40, 1)},
        {
            "step": _int64s(4),
            "window": _hann(16),
            "length": _int64s(10),
            "sixteen": _int64s(16),
            "complex_signal": _floats(2, 40, 2),
        },
        id="stft",
    ),
]


@pytest.mark.parametrize(("opset", "nodes", "feeds", "initializers"), HAND_BUILT + SEQUENCE_OPS)
def test_hand_built_graph_matches_onnxruntime(
    opset: int,
    nodes: list[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray],
) -> None:
    _assert_matches_onnxruntime(_graph(opset, nodes, feeds, initializers), feeds)


# Graphs through the differentiable new operators; x is the input differentiated.
GRADIENT_PATHS = [
    pytest.param(
        23,
        [
            node("Sin", ["x"], ["k"]),
            node("Cos", ["x"], ["v"]),
            node("Attention", ["x", "k", "v", "float_mask"], ["attended"], is_causal=1,
                 softcap=3.0),
            node("RMSNormalization", ["attended", "scale"], ["rms"]),
            node("ReduceL2", ["rms", "last"], ["norms"]),
            node("CumSum", ["norms", "last"], ["cumulative"], exclusive=1),
            node("Transpose", ["x"], ["tokens"], perm=[0, 2, 1, 3]),
            node("Reshape", ["tokens", "flat_heads"], ["hidden"]),
            node("Attention", ["hidden", "hidden", "hidden"], ["grouped"], q_num_heads=4,
                 kv_num_heads=4, scale=0.3),
        ],
        (2, 4, 3, 8),
        {"float_mask": _floats(3, 3), "scale": _floats(8), "last": _int64s([-1]),
         "flat_heads": _int64s([0, 0, -1])},
        ["attended", "rms", "cumulative", "grouped"],
        id="attention-rms-l2-cumsum",
    ),
    pytest.param(
        21,
        [
            node("GroupNormalization", ["x", "scale", "bias"], ["grouped"], num_groups=2),
            node("GatherElements", ["grouped", "columns"], ["picked"], axis=2),
            node("GatherND", ["grouped", "per_sample"], ["rows"], batch_dims=1),
            node("Trilu", ["grouped"], ["upper"]),
            node("ReduceLogSumExp", ["upper", "last"], ["soft_max"]),
            node("ReduceL1", ["rows", "last"], ["l1"]),
            node("Exp", ["picked"], ["positive"]),
            node("ReduceLogSum", ["positive", "last"], ["log_sum"]),
            node("ReduceSumSquare", ["picked", "last"], ["energy"]),
        ],
        (2, 4, 6),
        {"scale": _floats(4), "bias": _floats(4), "last": _int64s([-1]),
         "columns": _int64s(_rng.integers(-6, 6, (2, 4, 3))),
         "per_sample": _int64s([[[3], [0]], [[1], [-1]]])},
        ["grouped", "picked", "rows", "soft_max", "l1", "log_sum", "energy"],
        id="group-norm-gathers-reductions",
    ),
    pytest.param(
        17,
        [
            node("Unsqueeze", ["x", "last"], ["signal"]),
            node("STFT", ["signal", "step", "window"], ["spectrum"]),
            node("ReduceSumSquare", ["spectrum"], ["power"], axes=[-1]),
        ],
        (2, 40),
        {"last": _int64s([-1]), "step": _int64s(4), "window": _hann(16)},
        ["spectrum", "power"],
        id="stft-power",
    ),
]
#: Directional derivatives: the interpreter's autograd against onnxruntime's central
#: differences in float32, steps 1e-2 and 5e-3 combined by Richardson extrapolation
#: (truncation O(step^4); float32 rounding ~1e-5 of the objective's scale).
GRADIENT_RTOL, GRADIENT_ATOL = 2e-3, 1e-4


@pytest.mark.parametrize(("opset", "nodes", "shape", "initializers", "outputs"), GRADIENT_PATHS)
def test_gradients_match_onnxruntime_finite_differences(
    opset: int,
    nodes: list[onnx.NodeProto],
    shape: tuple[int, ...],
    initializers: dict[str, np.ndarray],
    outputs: list[str],
) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    model = _graph(opset, nodes, {"x": x}, initializers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(_expose_all_values(model).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    graph = OnnxTorchGraph(model)
    for name in outputs:
        direction = rng.standard_normal(shape).astype(np.float32)
        (reference,) = session.run([name], {"x": x})
        weights = rng.standard_normal(reference.shape)

        def objective(t: float, name: str = name, direction: np.ndarray = direction,
                      weights: np.ndarray = weights) -> float:
            (value,) = session.run([name], {"x": x + np.float32(t) * direction})
            return float(np.sum(weights * value.astype(np.float64)))

        def central(step: float, objective: Callable[[float], float] = objective) -> float:
            return (objective(step) - objective(-step)) / (2 * step)

        numeric = (4 * central(5e-3) - central(1e-2)) / 3
        inputs = torch.from_numpy(x).requires_grad_()
        (value,) = graph({"x": inputs}, [name])
        (gradient,) = torch.autograd.grad((value.double() * torch.from_numpy(weights)).sum(),
                                          inputs)
        analytic = float((gradient.double() * torch.from_numpy(direction)).sum())
        assert analytic == pytest.approx(numeric, rel=GRADIENT_RTOL, abs=GRADIENT_ATOL), name


def test_index_based_paths_have_correct_gradients() -> None:
    """Finite differences through Pad/Resize/pooling/LayerNorm, which use custom index code."""
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 6))
    nodes = [
        node("Pad", ["x", "pads"], ["reflected"], mode="reflect"),
        node("Resize", ["reflected", "", "", "sizes"], ["resized"], mode="linear"),
        node(
            "AveragePool",
            ["resized"],
            ["averaged"],
            kernel_shape=[3, 3],
            pads=[1, 1, 0, 2],
            ceil_mode=1,
        ),
        node("MaxPool", ["averaged"], ["maxed"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        node("LayerNormalization", ["maxed", "scale"], ["y"], axis=1),
    ]
    initializers = {
        "pads": _int64s([0, 0, 1, 2, 0, 0, 2, 1]),
        "sizes": _int64s([1, 2, 9, 7]),
        "scale": np.ones(1),
    }
    graph = OnnxTorchGraph(_graph(17, nodes, {"x": x}, initializers))
    assert torch.autograd.gradcheck(
        lambda t: graph({"x": t}, ["y"])[0], torch.from_numpy(x).requires_grad_(), fast_mode=True
    )


# ---------------------------------------------------------------- errors, early stop, buffers


def test_unsupported_operators_cost_only_the_values_computed_from_them() -> None:
    nodes = [
        node("Relu", ["x"], ["relu"]),
        node("NonMaxSuppression", ["boxes", "scores"], ["selected"]),
        node("FusedConv", ["x", "w"], ["fused"], domain="com.microsoft", name="fused_conv"),
        node("Resize", ["x", "", "scales"], ["cubic"], mode="cubic", name="upsample"),
        node("Resize", ["x", "", "scales"], ["bicubic"], mode="cubic"),
        node("Neg", ["cubic"], ["after_cubic"]),
        node("Neg", ["relu"], ["after_relu"]),
    ]
    model = _graph(13, nodes, {"x": _floats(1, 1, 2, 2)}, {})
    expected = ["NonMaxSuppression", "Resize(mode=cubic)", "com.microsoft.FusedConv"]
    assert unsupported_operators(model) == expected
    graph = OnnxTorchGraph(model)
    assert set(graph.unavailable) == {"selected", "fused", "cubic", "bicubic", "after_cubic"}
    assert graph.unavailable["after_cubic"] == graph.unavailable["cubic"] == (
        "depends on ONNX node 'upsample' (Resize(mode=cubic)), which has no torch version")
    assert "'fused_conv' (com.microsoft.FusedConv)" in graph.unavailable["fused"]
    x = torch.randn(1, 1, 2, 2)
    after_relu, relu = graph({"x": x}, ["after_relu", "relu"])
    torch.testing.assert_close(relu, torch.relu(x))
    torch.testing.assert_close(after_relu, -relu)
    with pytest.raises(GradientUnavailableError, match=re.escape("'after_cubic'") + ".*upsample"):
        graph({"x": x}, ["after_relu", "after_cubic"])


def test_only_the_nodes_a_value_depends_on_run() -> None:
    """A node that raises, and an input not supplied, on another branch do not matter."""
    nodes = [
        node("Reshape", ["x", "bad_shape"], ["broken"]),
        node("Add", ["x", "mask"], ["masked"]),
        node("Relu", ["x"], ["relu"]),
    ]
    feeds = {"x": _floats(2, 3), "mask": _floats(2, 3)}
    graph = OnnxTorchGraph(_graph(13, nodes, feeds, {"bad_shape": _int64s([7])}))
    x = torch.randn(2, 3)
    (relu,) = graph({"x": x}, ["relu"])
    torch.testing.assert_close(relu, torch.relu(x))
    with pytest.raises(InputError, match="not supplied: mask"):
        graph({"x": x}, ["masked"])


def test_blocking_a_value_blocks_what_is_computed_from_it() -> None:
    nodes = [
        node("Relu", ["x"], ["a"]),
        node("Neg", ["a"], ["b"]),
        node("Exp", ["x"], ["side"]),
        node("Add", ["b", "side"], ["joined"]),
    ]
    graph = OnnxTorchGraph(_graph(13, nodes, {"x": _floats(2, 3)}, {}))
    x = torch.randn(2, 3)
    graph({"x": x}, ["joined"])
    graph.block({"b": "wrong at b", "a": "wrong at a"})
    assert dict(graph.unavailable) == {"b": "wrong at b", "joined": "wrong at b",
                                       "a": "wrong at a"}
    (side,) = graph({"x": x}, ["side"])
    torch.testing.assert_close(side, torch.exp(x))
    with pytest.raises(GradientUnavailableError, match="'joined': wrong at b"):
        graph({"x": x}, ["joined"])


def test_local_evaluation_feeds_each_node_the_reference_values() -> None:
    """Teacher forcing: a reference value replaces the computed one for the nodes after it;
    a node that raises and an input not supplied are reported, and the nodes that need
    them do not run."""
    nodes = [
        node("Relu", ["x"], ["a"]),
        node("Neg", ["a"], ["b"]),
        node("Reshape", ["x", "bad_shape"], ["broken"], name="reshape"),
        node("Neg", ["broken"], ["after_broken"]),
        node("Add", ["x", "mask"], ["masked"]),
    ]
    feeds = {"x": _floats(2, 3), "mask": _floats(2, 3)}
    graph = OnnxTorchGraph(_graph(13, nodes, feeds, {"bad_shape": _int64s([7])}))
    x = torch.randn(2, 3)
    reference = {"a": torch.full((2, 3), 5.0), "b": torch.zeros(2, 3),
                 "after_broken": torch.zeros(2, 3), "masked": torch.zeros(2, 3)}
    computed, failures = graph.evaluate_locally({"x": x}, reference)
    torch.testing.assert_close(computed["a"], torch.relu(x))
    torch.testing.assert_close(computed["b"], torch.full((2, 3), -5.0))
    assert set(computed) == {"a", "b"} and set(failures) == {"broken", "mask"}
    assert failures["broken"].startswith("the torch path fails at ONNX node 'reshape': ")
    assert failures["mask"] == "ONNX graph input 'mask' is not supplied"


def test_supported_model_lists_no_operators() -> None:
    assert unsupported_operators(_export(_build("cnn"), torch.randn(2, 3, 16, 16), 13)) == []


def _failing_tail_graph() -> OnnxTorchGraph:
    """x -> Relu -> early -> Reshape to an impossible shape (raises when run) -> late."""
    nodes = [
        node("Relu", ["x"], ["early"]),
        node("Reshape", ["early", "bad_shape"], ["reshaped"]),
        node("Neg", ["reshaped"], ["late"]),
    ]
    return OnnxTorchGraph(_graph(13, nodes, {"x": _floats(2, 3)}, {"bad_shape": _int64s([7])}))


def test_stops_after_the_last_requested_value() -> None:
    graph = _failing_tail_graph()
    x = torch.randn(2, 3)
    early, given = graph({"x": x}, ["early", "x"])
    torch.testing.assert_close(early, torch.relu(x))
    assert given is x
    with pytest.raises(RuntimeError) as raised:
        graph({"x": x}, ["late"])
    assert "Reshape" in "".join(raised.value.__notes__)


def test_unknown_values_and_missing_inputs_are_reported() -> None:
    graph = _failing_tail_graph()
    with pytest.raises(LayerSelectionError, match="nowhere"):
        graph({"x": torch.randn(2, 3)}, ["nowhere"])
    with pytest.raises(InputError, match="x"):
        graph({}, ["early"])


def test_constants_are_buffers_that_follow_dtype_changes() -> None:
    model = _build("sequence")
    onnx_model = _export(model, torch.randn(EXPORT_BATCH, 5, 8), 13)
    graph = OnnxTorchGraph(onnx_model)
    n_constants = sum(node.op_type == "Constant" for node in onnx_model.graph.node)
    buffers = dict(graph.named_buffers())
    assert n_constants > 0
    assert len(buffers) == len(onnx_model.graph.initializer) + n_constants
    assert all(name.isidentifier() for name in buffers)

    x = torch.randn(RUN_BATCH, 5, 8)
    (y,) = graph.double()({"x": x.double()}, ["y"])
    assert y.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(y.float(), model(x), rtol=RTOL, atol=ATOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["cnn", "upsampling", "tensor_ops"])
def test_cuda_matches_cpu_including_gradients(name: str) -> None:
    model = _build(name)
    shape = EXPORTED[name][1]
    graph = OnnxTorchGraph(_export(model, torch.randn(EXPORT_BATCH, *shape), 17))
    x = torch.randn(RUN_BATCH, *shape)
    results = {}
    for device in ("cpu", "cuda"):
        x_device = x.to(device).requires_grad_()
        (y,) = graph.to(device)({"x": x_device}, ["y"])
        (gradient,) = torch.autograd.grad(y.sum(), x_device)
        results[device] = (y.detach().cpu(), gradient.cpu())
    for cpu, cuda in zip(results["cpu"], results["cuda"], strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=1e-3, atol=1e-4)


def test_initializer_of_a_type_torch_lacks_costs_only_what_reads_it():
    """A float8 weight: the values computed from it are unavailable, named by the weight;
    the rest of the graph runs."""
    weight = helper.make_tensor("w8", TensorProto.FLOAT8E4M3FN, [2], [1.0, 2.0])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w8"], ["w"], to=TensorProto.FLOAT, name="cast"),
         helper.make_node("Add", ["x", "w"], ["y"], name="add"),
         helper.make_node("Relu", ["x"], ["relu"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    labels = unsupported_operators(model)
    assert labels == ["initializer 'w8' of type FLOAT8E4M3FN"]
    interpreter = OnnxTorchGraph(model)
    assert set(interpreter.unavailable) == {"w8", "w", "y"}
    x = torch.randn(3, 2)
    torch.testing.assert_close(interpreter({"x": x}, ["relu"])[0], torch.relu(x))
    with pytest.raises(GradientUnavailableError, match="FLOAT8E4M3FN"):
        interpreter({"x": x}, ["y"])
