"""Control flow in ONNX graphs: what subgraphs read, and If nodes whose branch is known.

A node's subgraphs (If branches, Loop and Scan bodies) may read values of the enclosing
graph by name without listing them as inputs; :func:`node_reads` includes those, so an If
whose branches compute from the model input depends on it. An If whose condition is a
constant (an initializer or a Constant node) always takes the same branch:
:func:`inline_constant_ifs` puts that branch's nodes in its place, so their values are
top-level values that onnxruntime can return as layers. Values inside other control
flow cannot be captured; only the control-flow node's own outputs can.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

CONTROL_FLOW = {"If", "Loop", "Scan"}


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (If branches, Loop and Scan bodies)."""
    graphs: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def _outer_reads(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph`` reads from enclosing scopes (neither its inputs, its initializers nor
    its nodes' outputs)."""
    produced = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads |= {name for name in node_reads(node) if name not in produced}
        produced.update(node.output)
    return reads | {value.name for value in graph.output if value.name not in produced}


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The values ``node`` reads: its inputs and what its subgraphs read from outside."""
    reads = {name for name in node.input if name}
    for graph in subgraphs(node):
        reads |= _outer_reads(graph)
    return reads


def _names(graph: onnx.GraphProto, but: onnx.NodeProto | None = None) -> set[str]:
    """Every value name defined anywhere in ``graph``, subgraphs included (except those of
    node ``but``)."""
    names = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.output)
        if node is not but:
            for sub in subgraphs(node):
                names |= _names(sub)
    return names


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node tensors, by value name."""
    found = {tensor.name: tensor for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
                    found[node.output[0]] = attribute.t
    return found


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
        for sub in subgraphs(node):
            _rename(sub, mapping)


def _branch(node: onnx.NodeProto, taken: onnx.GraphProto, outer: set[str]
            ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """The nodes and initializers that replace If ``node`` by its ``taken`` branch, or None
    when the branch's names clash with the enclosing graph's."""
    branch = onnx.GraphProto()
    branch.CopyFrom(taken)
    if _names(branch) & outer:
        return None
    produced = {value for inner in branch.node for value in inner.output}
    branch_outputs = [value.name for value in branch.output]
    mapping = {name: target for name, target in zip(branch_outputs, node.output, strict=True)
               if name in produced and branch_outputs.count(name) == 1}
    _rename(branch, mapping)
    nodes = list(branch.node)
    for name, target in zip(branch_outputs, node.output, strict=True):
        if name not in mapping:  # an outer value, an initializer or a repeated output
            nodes.append(onnx.helper.make_node("Identity", [name], [target],
                                               name=f"{node.name or 'If'}/{target}"))
    return nodes, list(branch.initializer)


def inline_constant_ifs(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy in which every top-level If with a constant condition is
    replaced by the branch it takes (repeatedly: an inlined branch may hold more)."""
    while True:
        graph = model.graph
        constants = _constants(graph)
        for index, node in enumerate(graph.node):
            if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
                continue
            condition = constants.get(node.input[0])
            if condition is None or numpy_helper.to_array(condition).size != 1:
                continue
            names = {a.name: a.g for a in node.attribute}
            taken = names["then_branch" if numpy_helper.to_array(condition).item()
                          else "else_branch"]
            replacement = _branch(node, taken, _names(graph, but=node))
            if replacement is None:
                continue
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            nodes = list(copy.graph.node)
            nodes[index:index + 1] = replacement[0]
            del copy.graph.node[:]
            copy.graph.node.extend(nodes)
            copy.graph.initializer.extend(replacement[1])
            model = copy
            break
        else:
            return model
