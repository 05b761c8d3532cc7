"""Name ONNX layers by module path, as the TorchScript adapter does, where the file records it.

torch's exporters record the module each node comes from: the default (dynamo) exporter
in node metadata (``pkg.torch.onnx.name_scopes``: ``['', 'features', 'features.2',
'features.2.conv', 'conv2d_1']``, the full paths of the enclosing modules, then the node;
``pkg.torch.onnx.class_hierarchy``: their classes), the TorchScript-based exporter in the
node name (``/features/features.2/conv/Conv``, each scope named relative to an enclosing
module). Node names themselves (``node_Conv_13``) change from one export to the next.

Layers are then module outputs, found like :mod:`layerlens.models.torchscript_graph` finds
them: a module's nodes form a contiguous run, and the one capturable value that the run
hands to the rest of the graph is the module's output, named by its path (``features.2``;
a second call ``act#2``; a container whose output is its last child's is listed once, as
the child). Values computed inside a module but not handed on, and nodes of the root
module, are not layers, as in TorchScript. A graph that records no module paths (hand-made,
other converters) keeps one layer per node output, named by node name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass

import onnx

#: Operators whose outputs after the first are masks, not activations.
MASK_OUTPUTS = {"Dropout"}
_SCOPES = "pkg.torch.onnx.name_scopes"
_CLASSES = "pkg.torch.onnx.class_hierarchy"


@dataclass(frozen=True)
class NamedValue:
    """A layer: its name, what computes it (module class or ONNX operator), its value."""

    name: str
    op: str
    value: str


#: One enclosing module: (full path, class name or None).
_Module = tuple[str, str | None]


def _metadata_modules(node: onnx.NodeProto) -> list[_Module] | None:
    """Enclosing modules from the default exporter's node metadata, outermost first."""
    props = {prop.key: prop.value for prop in node.metadata_props}
    if _SCOPES not in props:
        return None
    try:
        scopes = ast.literal_eval(props[_SCOPES])
        classes = ast.literal_eval(props.get(_CLASSES, "[]"))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        return None
    paths = scopes[1:-1]  # the root module '' first, the node itself last
    if not isinstance(classes, list) or len(classes) != len(scopes):
        classes = [None] * len(scopes)
    return [(path, str(cls).rsplit(".", 1)[-1] if cls else None)
            for path, cls in zip(paths, classes[1:-1], strict=True) if path]


def _scoped_name_modules(node: onnx.NodeProto) -> list[_Module] | None:
    """Enclosing modules from a TorchScript-based export's node name
    (``/features/features.2/inner/inner.0/Conv``), outermost first.

    Each scope is the module's path relative to an enclosing module; its full path is the
    shortest such completion that lies inside the scope before it."""
    if not node.name.startswith("/"):
        return None
    scopes = node.name.split("/")[1:-1]
    paths: list[str] = []
    for scope in scopes:
        if not scope:
            return None
        parent = paths[-1] + "." if paths else ""
        options = sorted([scope, *(f"{path}.{scope}" for path in paths)], key=len)
        chosen = next((o for o in options if o.startswith(parent)), None)
        if chosen is None:
            return None
        paths.append(chosen)
    return [(path, None) for path in paths]


_REPEAT = re.compile(r"^(.+)_(\d+)$")


class _RepeatedCalls:
    """The TorchScript-based exporter names the scope of a module's second call ``act_1``
    (``blocks.0_1``): renamed ``act#2`` as the other formats name it, when ``act`` was seen
    before and no weight lives under ``act_1.`` (a module really called ``act_1`` with
    weights, its own or its children's, keeps its name; one without any, beside an ``act``
    called earlier, cannot be told apart from a second call)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        names = [init.name.split(".") for init in model.graph.initializer]
        self._weighted = {".".join(parts[:depth]) for parts in names
                          for depth in range(1, len(parts))}  # modules with weights under them
        self._seen: set[str] = set()
        self._renamed: dict[str, str] = {}

    def __call__(self, modules: list[_Module]) -> list[_Module]:
        result: list[_Module] = []
        for path, cls in modules:
            parent = result[-1][0] if result else ""
            original_parent = modules[len(result) - 1][0] if result else ""
            if parent != original_parent and path.startswith(original_parent + "."):
                path = parent + path[len(original_parent):]
            path = self._renamed.get(path, path)
            match = _REPEAT.match(path)
            if match and match.group(1) in self._seen and path not in self._weighted \
                    and path not in self._seen:
                renamed = f"{match.group(1)}#{int(match.group(2)) + 1}"
                self._renamed[path] = renamed
                path = renamed
            result.append((path, cls))
        self._seen.update(path for path, _ in result if "#" not in path)
        return result


def _modules(model: onnx.ModelProto) -> list[list[_Module] | None]:
    """Each top-level node's enclosing modules, or None where the file does not say."""
    scoped_names = model.producer_name == "pytorch"
    repeated = _RepeatedCalls(model)
    result = []
    for node in model.graph.node:
        modules = _metadata_modules(node)
        if modules is None and scoped_names:
            modules = _scoped_name_modules(node)
            modules = None if modules is None else repeated(modules)
        result.append(modules)
    return result


@dataclass
class _Run:
    path: tuple[str, ...]
    module_type: str | None
    nodes: list[int]


def _module_runs(modules: Sequence[list[_Module] | None], skip: set[int]) -> list[_Run]:
    """Contiguous runs of nodes per module path, in execution order (nodes in ``skip`` and
    nodes without a recorded module neither open nor close a run)."""
    runs: list[_Run] = []
    open_runs: dict[tuple[str, ...], _Run] = {}
    for index, enclosing in enumerate(modules):
        if enclosing is None or index in skip:
            continue
        prefixes = {tuple(path for path, _ in enclosing[:depth]): enclosing[depth - 1][1]
                    for depth in range(1, len(enclosing) + 1)}
        open_runs = {p: r for p, r in open_runs.items() if p in prefixes}
        for prefix, module_type in prefixes.items():
            if prefix not in open_runs:
                open_runs[prefix] = _Run(prefix, module_type, [])
                runs.append(open_runs[prefix])
            open_runs[prefix].nodes.append(index)
    return runs


def module_layers(model: onnx.ModelProto, reads: Sequence[set[str]], dependent: set[int],
                  capturable: Sequence[str]) -> list[NamedValue]:
    """Module outputs among ``capturable`` values, named by module path, in graph order;
    empty when the file records no module paths.

    ``reads[i]``: the values top-level node ``i`` reads (its subgraphs' included);
    ``dependent``: the nodes that depend on the model input (the others, constants, are
    skipped)."""
    nodes = model.graph.node
    modules = _modules(model)
    wanted = set(capturable)
    producer = {value: i for i, node in enumerate(nodes) for value in node.output if value}
    graph_outputs = {out.name for out in model.graph.output}
    read_by: dict[str, list[int]] = {}
    for index, values in enumerate(reads):
        for value in values:
            read_by.setdefault(value, []).append(index)
    skip = set(range(len(nodes))) - dependent
    by_value: dict[str, tuple[_Run, str]] = {}
    calls: dict[tuple[str, ...], int] = {}
    for run in _module_runs(modules, skip):
        calls[run.path] = calls.get(run.path, 0) + 1
        first, last = run.nodes[0], run.nodes[-1]
        exits = [value for index in run.nodes for value in nodes[index].output
                 if value in wanted and (value in graph_outputs or any(
                     user < first or user > last for user in read_by.get(value, ())))]
        if len(exits) != 1:
            continue
        name = run.path[-1] if calls[run.path] == 1 else f"{run.path[-1]}#{calls[run.path]}"
        kept = by_value.get(exits[0])
        if kept is None or len(run.path) > len(kept[0].path):
            by_value[exits[0]] = (run, name)
    position = {value: k for k, value in enumerate(capturable)}
    ordered = sorted(by_value.items(), key=lambda item: position[item[0]])
    return [NamedValue(name, run.module_type or nodes[producer[value]].op_type, value)
            for value, (run, name) in ordered]


def node_layers(model: onnx.ModelProto, capturable: Sequence[str]) -> list[NamedValue]:
    """One layer per capturable node output, named by node name (``name:k`` for the k-th
    output of a node with several)."""
    wanted = set(capturable)
    layers: list[NamedValue] = []
    used: set[str] = set()
    for index, node in enumerate(model.graph.node):
        outputs = [value for value in node.output if value]
        if node.op_type in MASK_OUTPUTS:
            outputs = outputs[:1]
        base = node.name or f"{node.op_type}_{index}"
        for k, value in enumerate(outputs):
            if value not in wanted:
                continue
            name = base if len(outputs) == 1 else f"{base}:{k}"
            while name in used:
                name += "_"
            used.add(name)
            layers.append(NamedValue(name, node.op_type, value))
    return layers
