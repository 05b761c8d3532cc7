"""Find module outputs inside a TorchScript graph and expose them as outputs.

Forward hooks do not work on loaded TorchScript modules (they raise on
scripted modules and silently never fire on traced ones), so layerlens works
on the graph instead: the forward graph is inlined, every node carries its
module hierarchy (``b1(Block).conv1(Conv2d)``), and a module's output is the
one tensor that a contiguous run of its nodes hands to the rest of the graph.
A capture function is then the same graph returning those values as extra
outputs, so every requested layer comes out of ONE forward pass.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_SEGMENT = re.compile(r"([^.()]+)\(([^()]*)\)")
_NOT_MODULES = {"SELF", "UNKNOWN_INSTANCE"}
# Nodes that only read attributes or make constants: they compute nothing and
# may be hoisted out of the module that uses them. Nodes without outputs
# (inlined argument checks: ``prim::If`` that raises) may lose their module
# hierarchy; neither kind opens or closes a module's run.
_BOOKKEEPING = {"prim::Constant", "prim::GetAttr"}
_function_ids = itertools.count()


@dataclass(frozen=True)
class GraphLayer:
    """A module output found in the inlined graph.

    ``node_index``/``output_index`` locate the value among the top-level
    nodes of the inlined graph, so the value can be found again in a copy.
    """

    name: str
    module_type: str
    node_index: int
    output_index: int


def inlined_forward_graph(module: torch.jit.ScriptModule) -> torch.Graph:
    """A private, fully inlined copy of ``module.forward``'s graph."""
    graph = module.graph.copy()  # the graph of forward
    torch._C._jit_pass_inline(graph)
    return graph


def _call_stack(node: torch.Node) -> list[tuple[str, str]]:
    """``[(attribute name, module type), ...]`` from the node's inlined call stack."""
    return [
        (name, type_)
        for name, type_ in _SEGMENT.findall(node.getModuleHierarchy())
        if name not in _NOT_MODULES
    ]


#: How deep a called module may sit inside containers that are never called themselves
#: (``self.layers = nn.ModuleList(...)``; ``for layer in self.layers: ...``).
_CONTAINER_DEPTH = 2


class ModulePaths:
    """Call stacks -> attribute paths in the module tree.

    A call stack names each module by the attribute its caller reached it
    through, and a container that is iterated rather than called never
    appears in it: ``layers.0.fc`` is called as ``0(Block).fc(Linear)``. The
    tree puts the container back: a segment that is not a child of the
    module above it is looked up among that module's descendants up to
    :data:`_CONTAINER_DEPTH` levels down by name and type; when several match
    (two ModuleLists of the same type) the segment keeps its bare name.
    """

    def __init__(self, root: torch.nn.Module | None) -> None:
        self._root = root
        self._cache: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = {}

    def __call__(self, stack: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        key = tuple(stack)
        if key not in self._cache:
            self._cache[key] = self._resolve(key)
        return self._cache[key]

    def _resolve(self, stack: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
        if self._root is None or not stack:
            return tuple(name for name, _ in stack)
        parent_path = self(stack[:-1])
        parent = self._module_at(parent_path)
        name, type_ = stack[-1]
        if parent is None:
            return (*parent_path, name)
        found = _descendants_named(parent, name, type_, _CONTAINER_DEPTH)
        return (*parent_path, *found[0]) if len(found) == 1 else (*parent_path, name)

    def _module_at(self, path: tuple[str, ...]) -> torch.nn.Module | None:
        module = self._root
        for name in path:
            module = dict(module.named_children()).get(name) if module is not None else None
        return module


def _type_name(module: torch.nn.Module) -> str:
    return str(getattr(module, "original_name", type(module).__name__))


def _descendants_named(module: torch.nn.Module, name: str, type_: str,
                       depth: int) -> list[tuple[str, ...]]:
    """Relative paths of the modules called ``name`` of type ``type_`` under ``module``: the
    direct child when there is one, else those inside uncalled containers ``depth`` deep."""
    children = dict(module.named_children())
    if name in children and _type_name(children[name]) == type_:
        return [(name,)]
    if depth == 0:
        return []
    return [(child_name, *path) for child_name, child in children.items()
            for path in _descendants_named(child, name, type_, depth - 1)]


def _top_level(node: torch.Node, top: torch.Block) -> torch.Node:
    """The node of the graph's top block that contains ``node`` (itself if top-level)."""
    while node.owningBlock() != top and node.owningBlock().owningNode() is not None:
        node = node.owningBlock().owningNode()
    return node


@dataclass
class _Run:
    path: tuple[str, ...]
    module_type: str
    nodes: list[tuple[int, torch.Node]]


def _module_runs(graph: torch.Graph, paths: ModulePaths) -> list[_Run]:
    """Contiguous runs of compute nodes per module path, in execution order."""
    runs: list[_Run] = []
    open_runs: dict[tuple[str, ...], _Run] = {}
    for index, node in enumerate(graph.nodes()):
        if node.kind() in _BOOKKEEPING or node.outputsSize() == 0:
            continue
        stack = _call_stack(node)
        prefixes = {paths(stack[:depth]): stack[depth - 1][1]
                    for depth in range(1, len(stack) + 1)}
        open_runs = {p: r for p, r in open_runs.items() if p in prefixes}
        for prefix, module_type in prefixes.items():
            if prefix not in open_runs:
                open_runs[prefix] = _Run(prefix, module_type, [])
                runs.append(open_runs[prefix])
            open_runs[prefix].nodes.append((index, node))
    return runs


def _run_output(run: _Run, graph: torch.Graph) -> tuple[int, int] | None:
    """(node index, output index) of the single tensor the run hands on, if exactly one."""
    first, last = run.nodes[0][1], run.nodes[-1][1]
    top = graph.block()
    exits = []
    for index, node in run.nodes:
        for out_index, value in enumerate(node.outputs()):
            users = [_top_level(use.user, top) for use in value.uses()]
            leaves_run = any(u.isBefore(first) or u.isAfter(last) for u in users)
            if leaves_run:
                exits.append((index, out_index, value))
    if len(exits) != 1 or not isinstance(exits[0][2].type(), torch.TensorType):
        return None
    return exits[0][0], exits[0][1]


def find_module_outputs(graph: torch.Graph,
                        module: torch.nn.Module | None = None) -> list[GraphLayer]:
    """Every module call's output tensor, in forward execution order, named by its attribute
    path in ``module`` (:class:`ModulePaths`; without ``module``, by the call stack alone).

    A module called more than once yields one layer per call, the second
    named ``path#2``. A container whose output is its last child's output is
    listed once, under the deepest module (``stem.1``, not ``stem``).
    """
    by_value: dict[tuple[int, int], tuple[_Run, str]] = {}
    calls: dict[tuple[str, ...], int] = {}
    for run in _module_runs(graph, ModulePaths(module)):
        calls[run.path] = calls.get(run.path, 0) + 1
        located = _run_output(run, graph)
        if located is None:
            continue
        name = ".".join(run.path)
        if calls[run.path] > 1:
            name = f"{name}#{calls[run.path]}"
        kept = by_value.get(located)
        if kept is None or len(run.path) > len(kept[0].path):
            by_value[located] = (run, name)
    ordered = sorted(by_value.items())
    return [GraphLayer(name, run.module_type, node_i, out_i)
            for (node_i, out_i), (run, name) in ordered]


def _value_at(graph: torch.Graph, node_index: int, output_index: int) -> torch.Value:
    node = next(itertools.islice(graph.nodes(), node_index, None))
    return list(node.outputs())[output_index]


def capture_function(graph: torch.Graph, layers: Sequence[GraphLayer]) -> torch._C.ScriptFunction:
    """A function ``f(module._c, x) -> tuple`` returning ``layers``' values in order.

    The graph's own output is dropped: the final output, when wanted, is
    itself a layer.
    """
    capture_graph = graph.copy()
    values = [_value_at(capture_graph, layer.node_index, layer.output_index) for layer in layers]
    while len(list(capture_graph.outputs())):
        capture_graph.eraseOutput(0)
    for value in values:
        capture_graph.registerOutput(value)
    capture_graph.makeMultiOutputIntoTuple()
    torch._C._jit_pass_dce(capture_graph)
    return torch._C._create_function_from_graph(
        f"layerlens_capture_{next(_function_ids)}", capture_graph
    )
