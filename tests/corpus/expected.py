"""Where layerlens stands on each corpus model today: the checks that fail, by issue 12's
failure class, with the error they fail with. The test marks each one
``xfail(strict=True)``, so a fix that makes it pass turns the test red until its line here
is removed. ``python -m tests.corpus.report`` prints the current state beside this.
"""

from __future__ import annotations

#: the checks of the test, by name
CHECKS = ("load", "analyses", "act_max")


def _every_check(case_id: str, reason: str) -> dict[tuple[str, str], str]:
    return {(check, case_id): reason for check in CHECKS}


_BERT = ("issue 12 class 4: ModelFormatError: {} 2 inputs (input_ids, attention_mask); "
         "layerlens feeds exactly one tensor")
_SILERO = ("issue 12 class 4: ModelFormatError: ONNX model has {}; "
           "layerlens feeds exactly one tensor")

#: (check, case id) -> "issue 12 class N: <the one-line error>"
KNOWN: dict[tuple[str, str], str] = {
    # more than one model input (class 4, not worked on this session); token ids too
    **_every_check("bert/onnx-dynamo", _BERT.format("ONNX model has")),
    **_every_check("bert/onnx-legacy", _BERT.format("ONNX model has")),
    **_every_check("bert/pt2", _BERT.format("the program takes")),
    **_every_check("bert/torchscript", "issue 12 class 4: ModelFormatError: TorchScript "
                   "forward takes 2 inputs; layerlens feeds exactly one tensor"),
    **_every_check("silero-vad/silero_vad.onnx", _SILERO.format("3 inputs (input, state, sr)")),
    **_every_check("silero-vad/silero_vad_16k_op15.onnx",
                   _SILERO.format("3 inputs (input, state, sr)")),
    **_every_check("silero-vad/silero_vad_op18_ifless.onnx",
                   _SILERO.format("3 inputs (input, sr, state)")),
    **_every_check("silero-vad/silero_vad_half.onnx", _SILERO.format("2 inputs (input, state)")),
    **_every_check("silero-vad/silero_vad_openvino_16k.onnx",
                   _SILERO.format("2 inputs (input, state)")),
    **_every_check("silero-vad/silero_vad.jit", "issue 12 class 4: ModelFormatError: "
                   "TorchScript forward takes 2 inputs; layerlens feeds exactly one tensor"),
    # integer token ids (class 5, not worked on this session)
    **_every_check("gpt2/onnx-dynamo", "issue 12 class 5: ModelFormatError: ONNX input "
                   "'input_ids' has type INT64; layerlens feeds float data"),
    **_every_check("gpt2/pt2", "issue 12 class 5: ModelFormatError: the program's input "
                   "'input_ids' has type torch.int64; layerlens feeds float data"),
    **_every_check("gpt2/torchscript", "issue 12 class 5: ShapeMismatchError: the model does "
                   "not run on input of shape (16,): RuntimeError: Expected tensor for argument "
                   "#1 'indices' to have one of the following scalar types: Long, Int; but got "
                   "torch.FloatTensor instead (while checking arguments for embedding); give "
                   "the shape of one sample as input_shape (e.g. 3,32,32)"),
}

#: case id -> why torch (not layerlens) cannot make that export
EXPORT_FAILURES: dict[str, str] = {
    "gpt2/onnx-legacy": "the legacy exporter has no ONNX for aten::diff (transformers' "
                        "causal-mask code): UnsupportedOperatorError: Exporting the operator "
                        "'aten::diff' to ONNX opset version 20 is not supported",
}
