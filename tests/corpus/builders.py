"""The corpus files and their datasets, built from nothing but installed packages.

Every transformers model is made from a config with random weights (tiny: hidden 32,
2 layers, 2 heads, a 64-token vocabulary, 32x32 images, 0.1 s of audio) and exported
the four ways users export a torch model: the default ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, which writes the weights to ``.onnx.data``), the
legacy one (``dynamo=False``), ``torch.export.save`` (``.pt2``) and ``torch.jit.trace``.
Every export gets a dynamic batch axis, as the exporters' tutorials do; the ResNet also
comes from the plainest call, ``torch.onnx.export(model, args, "f.onnx")``, which fixes
the example's batch size (2) in the file. An export that
torch itself cannot make is recorded with its error (not layerlens's failure).

Each dataset is an ``.npz`` with ``x`` (the model's first input), arrays named after the
model's other inputs (ARCHITECTURE, "Other model inputs") and ``y``: random samples with
a label the input determines, so that a probe has something to find.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# Nothing may be downloaded: the models are built from configs, never from_pretrained.
# huggingface_hub reads this when it is imported, so it is set before transformers is.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch

N_SAMPLES = 300
EXAMPLE_BATCH = 2
SEQUENCE = 16
VOCAB = 64
IMAGE = 32
AUDIO = 1600  # 0.1 s at 16 kHz
RATE = 16000
EXPORTS = ("onnx-dynamo", "onnx-legacy", "pt2", "torchscript")


@dataclass
class Case:
    """One corpus model file, its dataset, and what the test may expect of it."""

    id: str
    family: str
    export: str
    dataset: Path
    continuous: bool
    #: module paths that layer names must include (formats that record them)
    module_paths: tuple[str, ...] = ()
    model: Path | None = None
    #: why torch could not make this export (then ``model`` is None)
    export_error: str | None = None
    #: how the export was made when the plain call failed
    note: str | None = None


@dataclass(frozen=True)
class Family:
    """A transformers architecture: model, forward input names, dataset, expectations."""

    name: str
    make: Callable[[], torch.nn.Module]
    inputs: tuple[str, ...]
    data: Callable[[np.random.Generator, int], dict[str, np.ndarray]]
    continuous: bool
    module_paths: tuple[str, ...]
    exports: tuple[str, ...] = EXPORTS


# --- datasets: label determined by the input --------------------------------------------

def _balanced_labels(rng: np.random.Generator, n: int, classes: int = 2) -> np.ndarray:
    return rng.permutation(np.arange(n) % classes).astype(np.int64)


def _tokens(rng: np.random.Generator, n: int, *, mask: bool) -> dict[str, np.ndarray]:
    """Token ids from the low half of the vocabulary with probability 3/4 for class 1 and
    1/4 for class 0 (id 0 is padding); with ``mask``, random lengths padded at the end."""
    y = _balanced_labels(rng, n)
    low = rng.random((n, SEQUENCE)) < np.where(y == 1, 0.75, 0.25)[:, None]
    ids = np.where(low, rng.integers(1, VOCAB // 2, (n, SEQUENCE)),
                   rng.integers(VOCAB // 2, VOCAB, (n, SEQUENCE))).astype(np.int64)
    if not mask:
        return {"x": ids, "y": y}
    lengths = rng.integers(SEQUENCE // 2, SEQUENCE + 1, n)
    attention = (np.arange(SEQUENCE)[None, :] < lengths[:, None]).astype(np.int64)
    return {"x": ids * attention, "attention_mask": attention, "y": y}


def _images(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """3x32x32 noise; class 1 has a brighter red channel, class 0 a brighter blue one."""
    y = _balanced_labels(rng, n)
    x = rng.normal(0.0, 0.5, (n, 3, IMAGE, IMAGE)).astype(np.float32)
    x[y == 1, 0] += 1.0
    x[y == 0, 2] += 1.0
    return {"x": x, "y": y}


def _tones(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """0.1 s tones with noise: class 1 near 300 Hz, class 0 near 2 kHz."""
    y = _balanced_labels(rng, n)
    t = np.arange(AUDIO) / RATE
    freq = np.where(y == 1, 300.0, 2000.0) * rng.uniform(0.9, 1.1, n)
    amp = rng.uniform(0.3, 1.0, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    x = amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
    x += rng.normal(0.0, 0.05, x.shape)
    return {"x": x.astype(np.float32), "y": y}


def _speech_like(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: a voiced sound (five harmonics of a 100-250 Hz pitch); class 0: faint noise."""
    y = _balanced_labels(rng, n)
    t = np.arange(length) / RATE
    f0 = rng.uniform(100.0, 250.0, n)[:, None]
    voiced = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi, (n, 1))) / k
                 for k in range(1, 6))
    x = np.where(y[:, None] == 1, 0.3 * voiced, 0.0) + rng.normal(0.0, 0.01, (n, length))
    return x.astype(np.float32), y


# --- transformers architectures --------------------------------------------------------

def _bert() -> torch.nn.Module:
    from transformers import BertConfig, BertModel
    return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=SEQUENCE * 2, return_dict=False))


def _vit() -> torch.nn.Module:
    from transformers import ViTConfig, ViTModel
    return ViTModel(ViTConfig(image_size=IMAGE, patch_size=8, num_channels=3, hidden_size=32,
                              num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, return_dict=False))


def _gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2Model
    return GPT2Model(GPT2Config(vocab_size=VOCAB, n_positions=SEQUENCE * 2, n_embd=32,
                                n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
                                use_cache=False, return_dict=False))


def _resnet() -> torch.nn.Module:
    from transformers import ResNetConfig, ResNetModel
    return ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                    depths=[1, 1], layer_type="basic", return_dict=False))


def _wav2vec2() -> torch.nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    return Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, return_dict=False))


FAMILIES = (
    Family("bert", _bert, ("input_ids", "attention_mask"),
           lambda rng, n: _tokens(rng, n, mask=True), continuous=False,
           module_paths=("embeddings.LayerNorm", "encoder.layer.0.attention.self.query",
                         "encoder.layer.1.output.dense", "pooler.dense")),
    Family("vit", _vit, ("pixel_values",), _images, continuous=True,
           module_paths=("embeddings.patch_embeddings.projection", "layers.1.mlp.fc1",
                         "layernorm")),
    Family("gpt2", _gpt2, ("input_ids",), lambda rng, n: _tokens(rng, n, mask=False),
           continuous=False, module_paths=("h.0.attn.c_attn", "h.1.mlp.c_fc", "ln_f")),
    Family("resnet", _resnet, ("pixel_values",), _images, continuous=True,
           # no convolution or batch norm: both ONNX exporters fold each batch norm into its
           # convolution, the default one naming the result after the norm, the legacy one
           # after the convolution
           module_paths=("embedder.embedder.activation",
                         "encoder.stages.1.layers.0.layer.0.activation", "pooler"),
           exports=(*EXPORTS, "onnx-fixed-batch")),
    Family("wav2vec2", _wav2vec2, ("input_values",), _tones, continuous=True,
           module_paths=("feature_extractor.conv_layers.0.conv",
                         "encoder.layers.1.feed_forward.output_dense", "encoder.layer_norm")),
)

#: Formats whose files record module paths (ARCHITECTURE, "Layer names"): the default ONNX
#: exporter in node metadata, the legacy one in scoped node names (``/layers.0/mlp/fc1/Add``),
#: ``.pt2`` in ``nn_module_stack``, TorchScript in its module hierarchy.
RECORDS_MODULE_PATHS = ("onnx-dynamo", "onnx-legacy", "pt2", "torchscript", "onnx-fixed-batch")


class _ByKeyword(torch.nn.Module):
    """Calls the model with its inputs by keyword: how users get the legacy exporter past
    transformers' forward signatures (see :func:`_export_legacy`)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(**dict(zip(self.names, inputs, strict=True)))


class ExportFailed(Exception):
    """An export torch could not make, described in one line."""


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ExportFailed):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines, deprecation warnings and the legacy exporter's graph
    dump on failure (written by C++ straight to the file descriptors), kept out of the
    output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with tempfile.TemporaryFile() as sink:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
                  contextlib.redirect_stderr(io.StringIO())):
                warnings.simplefilter("ignore")
                yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def _dims(family: Family) -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    return tuple({0: batch} for _ in family.inputs)


def _export_dynamo(model, args, family: Family, path: Path) -> str | None:
    torch.onnx.export(model, args, str(path), dynamo=True, input_names=list(family.inputs),
                      dynamic_shapes=_dims(family))
    return None


def _export_plain(model, args, family: Family, path: Path) -> str | None:
    """The plainest call, ``torch.onnx.export(model, args, "f.onnx")``: the default exporter
    with the example's batch size fixed in the file."""
    torch.onnx.export(model, args, str(path))
    return None


def _export_legacy(model, args, family: Family, path: Path) -> str | None:
    axes = {name: {0: "batch"} for name in family.inputs}
    try:
        torch.onnx.export(model, args, str(path), dynamo=False,
                          input_names=list(family.inputs), dynamic_axes=axes)
        return None
    except TypeError as exc:
        # transformers' forward (decorated, with keyword-only options) is called with every
        # positional default by the legacy exporter: "got multiple values for argument".
        plain = f"the plain call fails ({_one_line(exc)})"
    try:
        torch.onnx.export(_ByKeyword(model, family.inputs).eval(), args, str(path),
                          dynamo=False, input_names=list(family.inputs), dynamic_axes=axes)
    except Exception as exc:
        raise ExportFailed(f"{plain}; through a keyword wrapper: {_one_line(exc)}") from exc
    return f"{plain}; exported through a keyword wrapper"


def _export_pt2(model, args, family: Family, path: Path) -> str | None:
    torch.export.save(torch.export.export(model, args, dynamic_shapes=_dims(family)), path)
    return None


def _export_torchscript(model, args, family: Family, path: Path) -> str | None:
    torch.jit.trace(model, args).save(str(path))
    return None


_EXPORTERS = {"onnx-dynamo": (_export_dynamo, ".onnx"), "onnx-legacy": (_export_legacy, ".onnx"),
              "pt2": (_export_pt2, ".pt2"), "torchscript": (_export_torchscript, ".pt"),
              "onnx-fixed-batch": (_export_plain, ".onnx")}


def _save_dataset(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def build_family(family: Family, folder: Path) -> list[Case]:
    """The exports of one architecture (each in a folder of its own, so that an
    ``.onnx.data`` sits beside its ``.onnx`` only), and its dataset."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = family.data(rng, N_SAMPLES)
    dataset = _save_dataset(folder / f"{family.name}.npz", arrays)
    torch.manual_seed(0)
    model = family.make().eval()
    example = [arrays["x"][:EXAMPLE_BATCH]] + [arrays[name][:EXAMPLE_BATCH]
                                               for name in family.inputs[1:]]
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    cases = []
    for export in family.exports:
        exporter, suffix = _EXPORTERS[export]
        case = Case(f"{family.name}/{export}", family.name, export, dataset, family.continuous,
                    family.module_paths if export in RECORDS_MODULE_PATHS else ())
        out = folder / export.replace("-", "_")
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{family.name}{suffix}"
        try:
            with _quiet(), torch.no_grad():
                case.note = exporter(model, args, family, path)
            case.model = path
            if case.note:  # exported through _ByKeyword: its modules sit under "model"
                case.module_paths = tuple(f"model.{p}" for p in case.module_paths)
        except Exception as exc:
            case.export_error = _one_line(exc)
        cases.append(case)
    return cases


# --- scikit-learn through skl2onnx -----------------------------------------------------

def build_sklearn(folder: Path, classes: int) -> Case:
    """An MLPClassifier (8 features) converted with skl2onnx's defaults: a label output and a
    ZipMap of probabilities. With 2 classes its output layer is one logistic unit."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(classes)
    x = rng.normal(size=(N_SAMPLES, 8)).astype(np.float32)
    scores = x @ rng.normal(size=(8, classes))
    y = (np.argmax(scores, axis=1) if classes > 2 else scores[:, 0] > 0).astype(np.int64)
    with _quiet():
        clf = MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=300, random_state=0)
        clf.fit(x, y)
        proto = to_onnx(clf, x[:1])
    name = _SKLEARN[classes]
    path = folder / name / "mlp.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return Case(f"{name}/skl2onnx", name, "skl2onnx",
                _save_dataset(folder / f"{name}.npz", {"x": x, "y": y}), True, model=path)


_SKLEARN = {3: "sklearn-mlp", 2: "sklearn-mlp-binary"}


# --- the model files inside the silero-vad package -------------------------------------

#: file -> (samples per chunk, the other inputs the file takes). The ONNX files take 512
#: samples plus 64 of context; the TorchScript wrapper adds the context itself. ``state``
#: is one value for every sample (its batch axis is inserted where the file declares it),
#: ``sr`` a scalar sample rate. ``silero_vad_16k_sequence.onnx`` is left out: its first
#: axis is time (one LSTM runs across the rows), not samples.
SILERO_FILES = {
    "silero_vad.onnx": (576, ("state", "sr")),
    "silero_vad_16k_op15.onnx": (576, ("state", "sr")),
    "silero_vad_op18_ifless.onnx": (576, ("state", "sr")),
    "silero_vad_half.onnx": (576, ("state",)),
    "silero_vad_openvino_16k.onnx": (576, ("state",)),
    "silero_vad.jit": (512, ("sr",)),
}
SILERO_MODULE_PATHS = ("_model.encoder.0.reparam_conv", "_model.decoder.rnn")


def silero_data_folder() -> Path:
    """The installed package's data folder (importlib.resources, no download)."""
    return Path(str(resources.files("silero_vad") / "data"))


def build_silero(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    cases = []
    for name, (length, others) in SILERO_FILES.items():
        if length not in samples:
            samples[length] = _speech_like(rng, N_SAMPLES, length)
        x, y = samples[length]
        extra = {"state": np.zeros((2, 128), np.float32), "sr": np.array(RATE, np.int64)}
        arrays = {"x": x, **{key: extra[key] for key in others}, "y": y}
        stem = name.replace(".", "_")
        dataset = _save_dataset(folder / f"silero_{stem}.npz", arrays)
        torchscript = name.endswith(".jit")
        cases.append(Case(f"silero-vad/{name}", "silero-vad",
                          "torchscript" if torchscript else "package-onnx", dataset, True,
                          SILERO_MODULE_PATHS if torchscript else (),
                          model=silero_data_folder() / name))
    return cases


# --- the corpus ------------------------------------------------------------------------

CASE_IDS = (
    [f"{family.name}/{export}" for family in FAMILIES for export in family.exports]
    + [f"{name}/skl2onnx" for name in _SKLEARN.values()]
    + [f"silero-vad/{name}" for name in SILERO_FILES]
)


def build_corpus(folder: Path) -> dict[str, Case]:
    """Every corpus case by id (:data:`CASE_IDS` order), files written under ``folder``."""
    cases: list[Case] = []
    for family in FAMILIES:
        cases += build_family(family, folder / family.name)
    cases += [build_sklearn(folder, classes) for classes in _SKLEARN]
    cases += build_silero(folder / "silero")
    built = {case.id: case for case in cases}
    assert list(built) == CASE_IDS, (list(built), CASE_IDS)
    return built
