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


def _module_path(node: torch.Node) -> list[tuple[str, str]]:
    """``[(attribute name, module type), ...]`` from the node's inlined call stack."""
    return [
        (name, type_)
        for name, type_ in _SEGMENT.findall(node.getModuleHierarchy())
        if name not in _NOT_MODULES
    ]


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


def _module_runs(graph: torch.Graph) -> list[_Run]:
    """Contiguous runs of compute nodes per module path, in execution order."""
    runs: list[_Run] = []
    open_runs: dict[tuple[str, ...], _Run] = {}
    for index, node in enumerate(graph.nodes()):
        if node.kind() in _BOOKKEEPING or node.outputsSize() == 0:
            continue
        path = _module_path(node)
        prefixes = {tuple(name for name, _ in path[:depth]): path[depth - 1][1]
                    for depth in range(1, len(path) + 1)}
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


def find_module_outputs(graph: torch.Graph) -> list[GraphLayer]:
    """Every module call's output tensor, in forward execution order.

    A module called more than once yields one layer per call, the second
    named ``path#2``. A container whose output is its last child's output is
    listed once, under the deepest module (``stem.1``, not ``stem``).
    """
    by_value: dict[tuple[int, int], tuple[_Run, str]] = {}
    calls: dict[tuple[str, ...], int] = {}
    for run in _module_runs(graph):
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
