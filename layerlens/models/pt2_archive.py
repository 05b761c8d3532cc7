"""Read a ``torch.export.save`` archive (``.pt2``) without running anything it carries.

``torch.export.load`` (torch 2.13) trusts its file. What it would do with each part of an
archive, and what layerlens does instead:

- weights and constants saved with ``use_pickle`` (tensor subclasses) go through
  ``torch.load(weights_only=False)``, which runs any code the pickle names: refused;
- ``custom_obj_*`` constants (TorchBind objects) go through ``torch._C._pickle_load_obj``
  and ``opaque_obj_*`` constants through ``pickle.loads``: refused;
- the example inputs ``data/sample_inputs/model.pt`` are unpickled with
  ``weights_only=True`` and, when that fails, again with ``weights_only=False``: never
  read (the input shape comes from the graph);
- the older layouts (``data/weights/model.pt``, torch 2.7's ``serialized_*.pt``) are
  unpickled the same way: refused;
- ``data/aotinductor/`` holds a compiled shared library that torch loads: refused;
- symbolic shapes (``expr_str``) are parsed by ``sympy.sympify``, that is ``eval``: only
  sympy arithmetic on named symbols is accepted;
- a node's ``target`` may name anything reachable from ``torch``, ``operator`` or ``math``
  (``torch.os.system``), and running the graph calls it: only ATen operators (less a few
  that touch files or process state) and symbolic integer arithmetic are accepted;
- value names and module paths become identifiers in the Python code that torch.fx
  generates and executes: only identifiers and dotted module paths are accepted;
- ``guards_code`` is Python source that ``ExportedProgram.module()`` executes: never run
  (layerlens runs the graph itself and drops the guards).

The rest is data: raw tensor bytes (read here, not by torch) and JSON, from which torch's
own deserializer builds the :class:`~torch.export.ExportedProgram`.
"""

from __future__ import annotations

import io
import json
import keyword
import math
import operator
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

import torch
from torch._export.serde import schema
from torch._export.serde.serialize import (
    ExportedProgramDeserializer,
    _dict_to_dataclass,
    deserialize_scalar_type,
)
from torch._export.serde.union import _Union
from torch.export import ExportedProgram

from layerlens.errors import ModelFormatError
from layerlens.models.sniff import EXPANSION_ALLOWANCE

_MODEL = "model"
#: Every member ``torch.export.save`` writes for one program (paths below the root folder).
_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|extra/[^/]+"
)
#: Members of other archives, and why they are refused.
_REFUSED_MEMBERS = (
    ("data/aotinductor/", "AOTInductor compiled code (a shared library torch would load)"),
    ("data/constants/custom_obj_", "a pickled custom object (torch would unpickle it)"),
    ("data/constants/opaque_obj_", "a pickled custom object (torch would unpickle it)"),
    ("data/weights/model.pt", "pickled weights of an older .pt2 layout"),
    ("data/constants/model.pt", "pickled constants of an older .pt2 layout"),
    ("models/", "a second program"),
)

_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
#: ATen operators that read or write files, print, or change process state.
REFUSED_OPS = frozenset({
    "save", "from_file", "_print", "warn", "manual_seed", "set_grad_enabled", "backward",
    "_backward", "dist_backward", "retain_grad", "set_data", "record_stream",
    "_cufft_clear_plan_cache", "_cufft_set_plan_cache_max_size",
})
#: Python callables a graph may call: symbolic integer arithmetic (torch's ``_SYM_OPS``).
SYMBOLIC_OPS: dict[str, Any] = {
    **{f"_operator.{name}": getattr(operator, name) for name in (
        "add", "and_", "eq", "floordiv", "ge", "gt", "le", "lshift", "lt", "mod", "mul", "ne",
        "neg", "or_", "pos", "pow", "rshift", "sub", "truediv")},
    "math.trunc": math.trunc,
    **{f"torch.{name}": getattr(torch, name) for name in (
        "_sym_sqrt", "sym_float", "sym_int", "sym_ite", "sym_max", "sym_min", "sym_not")},
}

_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<string>'[\w.+-]+'|\"[\w.+-]+\")|(?P<op>//|==|!=|<=|>=|[-+*/%(),=<>]))")
#: Names a symbolic shape may use: sympy's constructors and torch's shape functions
#: (what ``sympy.srepr`` writes for them), and the assumptions of a ``Symbol``.
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "LessThan",
    "StrictGreaterThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not",
    "Piecewise", "ExprCondPair", "ITE", "true", "false", "True", "False", "oo", "zoo", "nan",
    "int_oo", "IntInfinity", "NegativeIntInfinity",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "OpaqueUnaryFn_sqrt",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite",
    "nonzero", "zero", "even", "odd", "extended_real", "commutative", "precision",
})
_BARE_SYMBOL = re.compile(r"[a-z]+\d+")
_MODULE_PATH = re.compile(r"(?:\w+(?:\.\w+)*)?(?:@\d+)?")

#: Node metadata kept; the rest (``torch_fn``, ``source_fn_stack``...) torch resolves by
#: name, and layerlens does not need it.
_KEPT_METADATA = ("nn_module_stack", "stack_trace")
_INPUT_KINDS = {"user_input", "parameter", "buffer", "tensor_constant", "constant_input"}
_OUTPUT_KINDS = {"user_output", "buffer_mutation", "parameter_mutation",
                 "user_input_mutation"}
_ARGUMENT_KINDS_REFUSED = {
    "as_graph": "a subgraph (torch.cond or another control-flow operator)",
    "as_custom_obj": "a custom object", "as_operator": "an operator value",
}


class _Refused(Exception):
    """Why an archive is refused; :func:`load_exported_program` adds the file's name."""


def _quoted(text: str, limit: int = 60) -> str:
    """A string from the archive, quoted on one line (newlines escaped) and cut short."""
    return repr(text[:limit])


def _archive_members(data: bytes) -> tuple[zipfile.ZipFile, str]:
    """The zip and its root folder, once every member is one ``torch.export.save`` writes."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    if not names or len(set(names)) != len(names):
        raise _Refused("is an empty zip or has duplicate entries")
    expanded = sum(info.file_size for info in archive.infolist())
    if expanded > len(data) + EXPANSION_ALLOWANCE:
        raise _Refused(f"expands to {expanded / 1024**2:.0f} MiB (a compression bomb?); "
                       "torch.export.save writes entries uncompressed")
    root = names[0].split("/", 1)[0]
    for name in names:
        if not name.startswith(f"{root}/"):
            raise _Refused(f"has the entry {_quoted(name)} outside its root folder")
        inner = name[len(root) + 1:]
        if _MEMBERS.fullmatch(inner):
            continue
        for prefix, what in _REFUSED_MEMBERS:
            if inner.startswith(prefix):
                raise _Refused(f"holds {what} ({_quoted(inner)})")
        raise _Refused(f"holds {_quoted(inner)}, which torch.export.save does not write")
    return archive, root


def _read(archive: zipfile.ZipFile, root: str, member: str) -> bytes:
    try:
        return archive.read(f"{root}/{member}")
    except KeyError:
        raise _Refused(f"has no {_quoted(member)}") from None


def _payload_config(archive: zipfile.ZipFile, root: str, folder: str, kind: str,
                    prefix: str) -> schema.PayloadConfig:
    member = f"data/{folder}/{_MODEL}_{folder}_config.json"
    try:
        config = _dict_to_dataclass(schema.PayloadConfig,
                                    json.loads(_read(archive, root, member)))
    except _Refused:
        raise
    except Exception as exc:
        raise _Refused(f"has a malformed {_quoted(member)} ({type(exc).__name__})") from exc
    for fqn, meta in config.config.items():
        if meta.use_pickle or meta.tensor_meta is None:
            raise _Refused(f"stores {kind} {_quoted(fqn)} as a pickle, which torch would "
                           "unpickle with weights_only=False")
        if not re.fullmatch(rf"{prefix}\d+", meta.path_name):
            raise _Refused(f"stores {kind} {_quoted(fqn)} in {_quoted(meta.path_name)}, which "
                           "is not a raw tensor entry")
    return config


def _int(value: schema.SymInt, what: str) -> int:
    if value.type != "as_int" or not isinstance(value.value, int) or value.value < 0:
        raise _Refused(f"gives {what} as a symbolic or negative size")
    return int(value.value)


def _tensors(archive: zipfile.ZipFile, root: str, folder: str, kind: str, prefix: str
             ) -> dict[str, torch.Tensor]:
    """Weights or constants from their raw bytes, aliasing kept (one storage per entry)."""
    config = _payload_config(archive, root, folder, kind, prefix)
    storages: dict[str, torch.Tensor] = {}
    tensors: dict[str, torch.Tensor] = {}
    for fqn, meta in config.config.items():
        tensor_meta = meta.tensor_meta
        assert tensor_meta is not None  # checked by _payload_config
        try:
            dtype = deserialize_scalar_type(tensor_meta.dtype)
        except Exception:
            raise _Refused(f"gives {kind} {_quoted(fqn)} an unknown dtype") from None
        if tensor_meta.layout != schema.Layout.Strided:
            raise _Refused(f"stores {kind} {_quoted(fqn)} in a sparse or opaque layout")
        sizes = [_int(s, kind) for s in tensor_meta.sizes]
        strides = [_int(s, kind) for s in tensor_meta.strides]
        offset = _int(tensor_meta.storage_offset, kind)
        storage = storages.get(meta.path_name)
        if storage is None:
            raw = _read(archive, root, f"data/{folder}/{meta.path_name}")
            if len(raw) % dtype.itemsize:
                raise _Refused(f"stores {kind} {_quoted(fqn)} in a truncated entry")
            storage = (torch.frombuffer(bytearray(raw), dtype=dtype) if raw
                       else torch.empty(0, dtype=dtype))
            storages[meta.path_name] = storage
        if storage.dtype != dtype:
            raise _Refused(f"stores {kind} {_quoted(fqn)} with two dtypes in one entry")
        try:
            tensor = torch.as_strided(storage, sizes, strides, offset)
        except RuntimeError:
            raise _Refused(f"stores {kind} {_quoted(fqn)} with less data than its shape needs "
                           "(weights exported as fake tensors?)") from None
        tensors[fqn] = torch.nn.Parameter(tensor, requires_grad=False) if meta.is_param \
            else tensor
    return tensors


def _objects(node: Any) -> Iterator[Any]:
    """Every schema object inside ``node`` (dataclasses, unions, lists, dicts), depth first."""
    yield node
    if isinstance(node, _Union):
        yield from _objects(node.value)
    elif is_dataclass(node):
        for field in fields(node):
            yield from _objects(getattr(node, field.name))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _objects(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _objects(item)


def check_expression(text: str) -> None:
    """Refuse a symbolic shape unless it is sympy arithmetic on named symbols.

    ``sympy.sympify`` evaluates its text with Python's ``eval``; a text of numbers, the
    names in ``_EXPR_NAMES``, quoted symbol names, brackets, commas and operators cannot
    reach anything else (no attribute access, subscripts, or other names).
    """
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _EXPR_TOKEN.match(text, position)
        name = match and match.group("name")
        if match is None or (name and name not in _EXPR_NAMES
                             and not _BARE_SYMBOL.fullmatch(name)):
            raise _Refused("has a symbolic shape that is not arithmetic "
                           f"({_quoted(text[position:], 20)}), which torch would evaluate as "
                           "Python")
        position = match.end()


def _check_target(target: str) -> None:
    if target in SYMBOLIC_OPS:
        return
    match = _OP_TARGET.fullmatch(target)
    if target.startswith("torch.ops.higher_order."):
        raise _Refused(f"uses control flow ({_quoted(target)}), which layerlens does not run")
    if match is None:
        raise _Refused(f"calls {_quoted(target)}, which is not an ATen operator")
    op = getattr(getattr(torch.ops, match.group(1)), match.group(2), None)
    if match.group(2) in REFUSED_OPS or op is None \
            or not isinstance(getattr(op, match.group(3), None), torch._ops.OpOverload):
        raise _Refused(f"calls {_quoted(target)}, which layerlens does not run")


def _check_name(name: str | None, *, keywords: bool = False) -> None:
    """``name`` must be an identifier (and not a Python keyword unless ``keywords``)."""
    if name is not None and not (name.isidentifier()
                                 and (keywords or not keyword.iskeyword(name))):
        raise _Refused(f"names a value {_quoted(name)}, which is not a Python identifier")


def _check_program(program: schema.ExportedProgram) -> None:
    """Refuse what torch would evaluate, import or call beyond ATen operators."""
    module = program.graph_module
    for spec in module.signature.input_specs:
        if spec.type not in _INPUT_KINDS:
            raise _Refused(f"takes a {spec.type.replace('_', ' ')} input, which layerlens "
                           "does not load")
    for out in module.signature.output_specs:
        if out.type not in _OUTPUT_KINDS:
            raise _Refused(f"returns a {out.type.replace('_', ' ')}, which layerlens does "
                           "not run")
    for entry in module.module_call_graph:
        if not _MODULE_PATH.fullmatch(entry.fqn):
            raise _Refused(f"has the module path {_quoted(entry.fqn)}")
    for node in module.graph.nodes:
        _check_target(node.target)
    for obj in _objects(program):
        if isinstance(obj, schema.SymExpr):
            check_expression(obj.expr_str)
        elif isinstance(obj, schema.Argument) and obj.type in _ARGUMENT_KINDS_REFUSED:
            raise _Refused(f"passes {_ARGUMENT_KINDS_REFUSED[obj.type]} to an operator, "
                           "which layerlens does not run")
        elif isinstance(obj, schema.NamedArgument):  # matched to the operator's schema
            _check_name(obj.name, keywords=True)
        elif isinstance(obj, schema.Node | schema.TensorArgument | schema.TokenArgument):
            _check_name(obj.name)
        elif isinstance(obj, schema.SymIntArgument | schema.SymFloatArgument
                        | schema.SymBoolArgument) and obj.type == "as_name":
            _check_name(obj.value)
        elif isinstance(obj, schema.InputToParameterSpec | schema.InputToBufferSpec
                        | schema.InputToTensorConstantSpec | schema.BufferMutationSpec
                        | schema.ParameterMutationSpec):
            path = next(getattr(obj, f) for f in ("parameter_name", "buffer_name",
                                                   "tensor_constant_name") if hasattr(obj, f))
            if not _MODULE_PATH.fullmatch(path):
                raise _Refused(f"names a weight {_quoted(path)}, which is not a module path")


def _check_graph(program: ExportedProgram) -> None:
    """After loading: every call is an ATen operator or symbolic arithmetic, as checked."""
    allowed = set(SYMBOLIC_OPS.values()) | {operator.getitem}
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        target = node.target
        if node.op != "call_function" or not (
                target in allowed or (isinstance(target, torch._ops.OpOverload)
                                      and target.namespace in ("aten", "prims")
                                      and target._opname not in REFUSED_OPS)):
            raise _Refused(f"has a {node.op} node {_quoted(node.name)} that layerlens does "
                           "not run")


def load_exported_program(data: bytes, label: str) -> ExportedProgram:
    """The program of a ``torch.export.save`` archive, read without running its code.

    Raises
    ------
    ModelFormatError
        One line naming ``label``: what the archive holds that would run code, or why
        it cannot be read.
    """
    try:
        archive, root = _archive_members(data)
        if _read(archive, root, "archive_format") != b"pt2":
            raise _Refused("is not a torch.export archive (archive_format is not pt2)")
        version = _read(archive, root, "archive_version").decode(errors="replace")
        if version != "0":
            raise _Refused(f"has archive version {_quoted(version, 10)}; this torch reads "
                           "version 0")
        if _read(archive, root, "byteorder") not in (b"little",):
            raise _Refused("stores big-endian tensors")
        weights = _tensors(archive, root, "weights", "weight", "weight_")
        constants = _tensors(archive, root, "constants", "constant", "tensor_")
        try:
            serialized = _dict_to_dataclass(
                schema.ExportedProgram, json.loads(_read(archive, root, "models/model.json")))
        except _Refused:
            raise
        except Exception as exc:
            raise _Refused(f"has a malformed program ({type(exc).__name__})") from exc
        _check_program(serialized)
        serialized.guards_code = []
        for node in serialized.graph_module.graph.nodes:
            node.metadata = {k: v for k, v in node.metadata.items() if k in _KEPT_METADATA}
        try:
            program = ExportedProgramDeserializer().deserialize(serialized, weights, constants,
                                                               None)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            raise _Refused(f"cannot be read by torch: {lines[0] if lines else type(exc).__name__}"
                           ) from exc
        _check_graph(program)
    except _Refused as exc:
        raise ModelFormatError(f"{label} {exc} (nothing in it was run)") from exc
    except (RecursionError, TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        # JSON that parses but holds values of the wrong types or depth
        raise ModelFormatError(f"{label} has a malformed program or weight table "
                               f"({type(exc).__name__}; nothing in it was run)") from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as exc:  # a damaged, encrypted or oddly compressed zip
        raise ModelFormatError(f"{label} is a damaged zip archive: {exc}") from exc
    return program
