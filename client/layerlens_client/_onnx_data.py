"""The external data files an ONNX model refers to, read from its protobuf without onnx.

torch's default exporter writes ``f.onnx`` beside ``f.onnx.data``; a tensor stored outside
the model names its file in ``external_data`` (key ``location``, a path relative to the
model's folder). :func:`external_data_files` walks the tensors of the graph, of subgraphs
(``If``/``Loop`` bodies) and of function and attribute tensors, as the wire format lays
them out (field numbers of onnx.proto3), so the light client can upload a model with its
data files. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

#: Every exporter writes ``ir_version`` (field 1, a varint) first: a cheap check that skips
#: TorchScript and ``.pt2`` zips without reading them.
_ONNX_FIRST_BYTE = b"\x08"

# Field numbers of onnx.proto3 on the paths to a TensorProto.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODES, _GRAPH_INITIALIZERS, _GRAPH_SPARSE_INITIALIZERS = 1, 5, 15
_FUNCTION_NODES = 7
_NODE_ATTRIBUTES = 5
_ATTRIBUTE_TENSOR, _ATTRIBUTE_GRAPH, _ATTRIBUTE_TENSORS, _ATTRIBUTE_GRAPHS = 5, 6, 10, 11
_ATTRIBUTE_SPARSE_TENSOR, _ATTRIBUTE_SPARSE_TENSORS = 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL_DATA = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class NotProtobuf(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise NotProtobuf("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, payload) of each field of one message; payload None unless the field
    is length-delimited (wire type 2)."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
            yield number, None
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
            yield number, None
        elif wire == 2:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise NotProtobuf("a field runs past the end")
            yield number, data[at:at + size]
            at += size
        else:
            raise NotProtobuf(f"wire type {wire}")
    if at != len(data):
        raise NotProtobuf("a field runs past the end")


def _sub(data: memoryview, *numbers: int) -> Iterator[memoryview]:
    for number, payload in _fields(data):
        if number in numbers and payload is not None:
            yield payload


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for entry in _sub(tensor, _TENSOR_EXTERNAL_DATA):
        fields = {number: bytes(payload) for number, payload in _fields(entry)
                  if payload is not None}
        if fields.get(_ENTRY_KEY) == b"location" and _ENTRY_VALUE in fields:
            yield fields[_ENTRY_VALUE].decode("utf-8", "replace")


def _sparse_locations(sparse: memoryview) -> Iterator[str]:
    for tensor in _sub(sparse, _SPARSE_VALUES, _SPARSE_INDICES):
        yield from _tensor_locations(tensor)


def _node_locations(node: memoryview) -> Iterator[str]:
    for attribute in _sub(node, _NODE_ATTRIBUTES):
        for number, payload in _fields(attribute):
            if payload is None:
                continue
            if number in (_ATTRIBUTE_TENSOR, _ATTRIBUTE_TENSORS):
                yield from _tensor_locations(payload)
            elif number in (_ATTRIBUTE_SPARSE_TENSOR, _ATTRIBUTE_SPARSE_TENSORS):
                yield from _sparse_locations(payload)
            elif number in (_ATTRIBUTE_GRAPH, _ATTRIBUTE_GRAPHS):
                yield from _graph_locations(payload)


def _graph_locations(graph: memoryview) -> Iterator[str]:
    for number, payload in _fields(graph):
        if payload is None:
            continue
        if number == _GRAPH_INITIALIZERS:
            yield from _tensor_locations(payload)
        elif number == _GRAPH_SPARSE_INITIALIZERS:
            yield from _sparse_locations(payload)
        elif number == _GRAPH_NODES:
            yield from _node_locations(payload)


def external_data_files(path: Path) -> list[str]:
    """The ``location`` of every tensor of the ONNX model at ``path`` stored outside it, in
    order of first mention (relative to the model's folder); ``[]`` for a self-contained
    model or a file that is not ONNX (the server says what is wrong with it)."""
    with path.open("rb") as file:
        first = file.read(1)
        if first != _ONNX_FIRST_BYTE:
            return []
        return _model_locations(memoryview(first + file.read()))


def _model_locations(data: memoryview) -> list[str]:
    locations: dict[str, None] = {}
    try:
        for number, payload in _fields(data):
            if payload is None:
                continue
            if number == _MODEL_GRAPH:
                found = _graph_locations(payload)
            elif number == _MODEL_FUNCTIONS:
                found = (location for node in _sub(payload, _FUNCTION_NODES)
                         for location in _node_locations(node))
            else:
                continue
            locations.update(dict.fromkeys(found))
    except NotProtobuf:
        return []
    return list(locations)
