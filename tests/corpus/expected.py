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


_IFLESS = ("issue 12 class 10: ModelFormatError: the ONNX model's layers sit inside control "
           "flow (If node 'node_cond__1', whose branches or body depend on the input), where "
           "onnxruntime cannot return them; layerlens captures values outside control flow, "
           "and If nodes with a constant condition")

#: (check, case id) -> "issue 12 class N: <the one-line error>"
KNOWN: dict[tuple[str, str], str] = {
    # the sample rate input sr selects the branch of an If (its condition is computed from
    # sr, so it is not a constant the file holds): its layers sit inside control flow
    **_every_check("silero-vad/silero_vad_op18_ifless.onnx", _IFLESS),
    # the TorchScript wrapper takes sr as a Python int (fed), but calls its modules only
    # inside if bodies, where their outputs cannot be captured
    **_every_check("silero-vad/silero_vad.jit", (
        "issue 12 class 10: ModelFormatError: model file 'silero_vad.jit' has no layers: "
        "layerlens lists the outputs of a TorchScript model's submodules, and found none to "
        "capture (modules called only inside if or loop bodies are not listed); wrap the "
        "computation in submodules")),
    # every layer of the main file is an output of an If that has no torch version
    ("act_max", "silero-vad/silero_vad.onnx"): (
        "issue 12 class 9: AssertionError: silero-vad/silero_vad.onnx: activation_maximization "
        "ran on no layer"),
}

#: case id -> why torch (not layerlens) cannot make that export
EXPORT_FAILURES: dict[str, str] = {
    "gpt2/onnx-legacy": "the legacy exporter has no ONNX for aten::diff (transformers' "
                        "causal-mask code): UnsupportedOperatorError: Exporting the operator "
                        "'aten::diff' to ONNX opset version 20 is not supported",
}
