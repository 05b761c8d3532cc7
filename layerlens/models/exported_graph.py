"""Find module outputs in a ``torch.export`` graph from each node's ``nn_module_stack``.

Every node of an exported program records the modules it ran inside, outermost first:
``{key: (module path, module type)}``, the key telling one call of a module from the next.
As for TorchScript (:mod:`layerlens.models.torchscript_graph`), a module call is a
contiguous run of nodes, and its output the one tensor the run hands to the rest of the
graph; so the two formats give one network the same layer names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import fx


@dataclass(frozen=True)
class ProgramLayer:
    """A module output: ``node`` is the name of the graph node whose value it is."""

    name: str
    module_type: str
    node: str


@dataclass
class _Run:
    path: str
    module_type: str
    depth: int
    nodes: list[fx.Node] = field(default_factory=list)


def _holds_tensor(node: fx.Node) -> bool:
    value = node.meta.get("val")
    values = value if isinstance(value, list | tuple) else [value]
    return any(isinstance(v, torch.Tensor) for v in values)


def _module_runs(graph: fx.Graph) -> list[_Run]:
    """Contiguous runs of tensor-computing nodes per module call, in execution order.

    Nodes that compute no tensor (sizes, assertions) neither open nor close a run; nodes of
    the root module alone (functional code in ``forward``) close every run.
    """
    runs: list[_Run] = []
    open_runs: dict[tuple[str, ...], _Run] = {}
    for node in graph.nodes:
        if node.op != "call_function" or not _holds_tensor(node):
            continue
        stack = [(key, path, type_) for key, (path, type_)
                 in (node.meta.get("nn_module_stack") or {}).items() if path]
        keys = tuple(key for key, _, _ in stack)
        prefixes = {keys[:depth]: stack[depth - 1] for depth in range(1, len(stack) + 1)}
        open_runs = {p: r for p, r in open_runs.items() if p in prefixes}
        for prefix, (_, path, type_) in prefixes.items():
            if prefix not in open_runs:
                name = type_.rsplit(".", 1)[-1] if isinstance(type_, str) else type_.__name__
                open_runs[prefix] = _Run(path, name, len(prefix))
                runs.append(open_runs[prefix])
            open_runs[prefix].nodes.append(node)
    return runs


def _run_output(run: _Run, order: dict[fx.Node, int]) -> fx.Node | None:
    """The single tensor node whose value is used after the run, if exactly one is."""
    last = order[run.nodes[-1]]
    exits = [node for node in run.nodes
             if any(order[user] > last for user in node.users)]
    if len(exits) != 1 or not isinstance(exits[0].meta.get("val"), torch.Tensor):
        return None
    return exits[0]


def find_module_outputs(graph: fx.Graph) -> list[ProgramLayer]:
    """Every module call's output tensor, in forward execution order.

    A module called more than once yields one layer per call, the second named
    ``path#2``. A container whose output is its last child's output is listed once, under
    the deepest module (``stem.1``, not ``stem``).
    """
    order = {node: index for index, node in enumerate(graph.nodes)}
    by_node: dict[fx.Node, tuple[_Run, str]] = {}
    calls: dict[str, int] = {}
    for run in _module_runs(graph):
        calls[run.path] = calls.get(run.path, 0) + 1
        node = _run_output(run, order)
        if node is None:
            continue
        name = run.path if calls[run.path] == 1 else f"{run.path}#{calls[run.path]}"
        kept = by_node.get(node)
        if kept is None or run.depth > kept[0].depth:
            by_node[node] = (run, name)
    return [ProgramLayer(name, run.module_type, node.name)
            for node, (run, name) in sorted(by_node.items(), key=lambda item: order[item[0]])]
