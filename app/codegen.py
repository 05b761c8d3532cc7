"""Code the repository generates from the engine's schemas, and the check that it is current.

``python -m app.codegen client-report`` writes ``client/layerlens_client/report.py``: pydantic
models of the report document for the light client (which cannot import the engine), made
from :func:`layerlens.report.schema.report_model`'s JSON schema, so they follow the registry
of analysis kinds. ``--check`` writes nothing and exits 1 when the file is not what the
command would write (a kind was added or a section changed without regenerating).

The translator handles the JSON-schema subset pydantic writes for the report: objects with
``properties`` / ``required`` / ``additionalProperties``, arrays, ``anyOf`` (``null`` in it
makes a field nullable), ``enum`` / ``const``, ``$ref`` to ``$defs`` and the primitive types.
Anything else raises :class:`CodegenError` naming where it is, rather than guessing.
"""

from __future__ import annotations

import argparse
import json
import keyword
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
CLIENT_REPORT = ROOT / "client" / "layerlens_client" / "report.py"
CLIENT_REPORT_COMMAND = "python -m app.codegen client-report"
LINE = 100

#: Keys that only annotate (they do not change what is valid for a reader).
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "minimum", "maximum",
                          "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                          "minItems", "maxItems", "pattern", "format", "deprecated",
                          "readOnly", "writeOnly"})
_PRIMITIVES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
               "null": "None"}

CLIENT_REPORT_DOC = '''\
"""Typed models of the layerlens report document (``report.json``; ``GET /v1/jobs/{id}/report``).

Generated from the engine's report schema (``layerlens.report.schema.report_model()``, which
the registry of analysis kinds builds) by ``python -m app.codegen client-report``. Do not
edit: change the engine, then run that command again (a test fails while this file is stale).

:class:`Report` is the whole document; ``Report.analyses`` holds one section per analysis
kind: its section model, :class:`FailedAnalysis` (``{"failed", "error_type"}``) when the
analysis raised as a whole, or None when it was not run. Layer rows are the kind's row model,
:class:`SkippedLayer` (``{"layer", "skipped"}``) or :class:`FailedLayer`
(``{"layer", "failed"}``); ``Report.warnings`` lists what did not finish.

Every model allows keys it does not know (``extra="allow"``; they are kept in
``model_extra``), so an older client reads a newer server's report; every key it knows is
typed. For the same reason enumerated strings are typed ``str``, with the values known when
this file was generated noted beside them.
"""'''


#: Docstrings of the models whose schema has none.
CLIENT_REPORT_DOCS = {
    "Report": "The report document, as ``layerlens analyze`` writes it and "
              "``GET /v1/jobs/{id}/report`` serves it.",
    "Analyses": "One section per analysis kind: its section model, :class:`FailedAnalysis` "
                "when it raised as a whole, None when it was not run. Kinds this client "
                "does not know are kept as plain dicts in ``model_extra``.",
}


class CodegenError(Exception):
    """The schema uses something this generator does not translate."""


def _pystr(text: str) -> str:
    """A double-quoted Python string literal of ``text`` (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def _pyvalue(value: Any) -> str:
    """A Python literal of a JSON value."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return _pystr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_pyvalue(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_pystr(k)}: {_pyvalue(v)}" for k, v in value.items()) + "}"
    raise CodegenError(f"cannot write the default {value!r} as Python")


def _identifier(name: str) -> str:
    """``name`` made a Python identifier (a class name from a ``$defs`` key)."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"_{cleaned}"
    return cleaned


def _attribute(name: str) -> str:
    """The attribute a JSON key becomes: itself, unless Python or pydantic cannot use it (the
    models allow ``model_`` names; one that is a ``BaseModel`` attribute gets an alias)."""
    if (name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")
            and not hasattr(BaseModel, name)):
        return name
    attribute = _identifier(name).lstrip("_") or "field"
    while keyword.iskeyword(attribute) or hasattr(BaseModel, attribute) or attribute == name:
        attribute += "_"
    return attribute


def _split(text: str, width: int) -> list[str]:
    """``text`` cut at spaces into pieces whose literals are at most ``width`` wide."""
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and len(_pystr(candidate + " ")) > width:
            pieces.append(current + " ")
            current = word
        else:
            current = candidate
    pieces.append(current)
    return pieces


@dataclass
class _Type:
    """A Python annotation, as the members of its top-level union, and the enumerated values
    it stands for."""

    members: tuple[str, ...]
    values: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, annotation: str, values: list[Any] | None = None) -> _Type:
        return cls((annotation,), values or [])

    @property
    def annotation(self) -> str:
        return " | ".join(self.members)

    @property
    def nullable(self) -> bool:
        return "None" in self.members or "Any" in self.members


@dataclass
class _Field:
    name: str
    attribute: str
    annotation: str
    comment: str | None
    kwargs: list[tuple[str, str]]  # Field(...) arguments, as Python source
    default: str | None  # a plain default, when Field(...) is not needed


@dataclass
class _Class:
    name: str
    doc: str | None
    title: str | None
    fields: list[_Field]
    extra_values: str | None  # the annotation of additionalProperties, when typed


class SchemaTranslator:
    """Turns a JSON schema with ``$defs`` into pydantic model classes, as Python source."""

    def __init__(self, schema: dict[str, Any], *,
                 docs: Mapping[str, str] | None = None) -> None:
        self.schema = schema
        self.docs = dict(docs or {})
        self.defs: dict[str, Any] = schema.get("$defs", {})
        self.names = {key: _identifier(key) for key in self.defs}
        root = schema.get("title")
        if not isinstance(root, str):
            raise CodegenError("the root schema has no title to name its model")
        self.root = _identifier(root)
        if self.root in self.names.values():
            raise CodegenError(f"the root model's name {self.root} is also a $defs entry")
        self.uses_any = False
        self.uses_field = False

    # -- types -----------------------------------------------------------------------------

    def _ref(self, ref: str, where: str) -> str:
        prefix = "#/$defs/"
        if not ref.startswith(prefix) or ref[len(prefix):] not in self.defs:
            raise CodegenError(f"{where}: unsupported $ref {ref!r}")
        return self.names[ref[len(prefix):]]

    def type_of(self, node: Any, where: str) -> _Type:
        if node is True or node == {}:
            self.uses_any = True
            return _Type.of("Any")
        if not isinstance(node, dict):
            raise CodegenError(f"{where}: expected a schema object, got {node!r}")
        unknown = set(node) - _ANNOTATIONS - {"$ref", "anyOf", "allOf", "oneOf", "type",
                                              "enum", "const", "items", "properties",
                                              "required", "additionalProperties"}
        if unknown:
            raise CodegenError(f"{where}: unsupported schema keys {sorted(unknown)}")
        if "$ref" in node:
            return _Type.of(self._ref(node["$ref"], where))
        if "allOf" in node:  # pydantic's spelling of a described $ref
            parts = node["allOf"]
            if len(parts) != 1:
                raise CodegenError(f"{where}: allOf with {len(parts)} schemas")
            return self.type_of(parts[0], f"{where}.allOf[0]")
        for union in ("anyOf", "oneOf"):
            if union in node:
                return self._union([self.type_of(option, f"{where}.{union}[{i}]")
                                    for i, option in enumerate(node[union])])
        if "const" in node or "enum" in node:
            values = [node["const"]] if "const" in node else list(node["enum"])
            kinds = {type(v) for v in values}
            if kinds <= {str}:
                return _Type.of("str", values)
            if kinds <= {int}:
                return _Type.of("int", values)
            raise CodegenError(f"{where}: enum of {sorted(k.__name__ for k in kinds)}")
        kind = node.get("type")
        if isinstance(kind, list):
            return self._union([self.type_of({**node, "type": k}, where) for k in kind])
        if kind in _PRIMITIVES:
            return _Type.of(_PRIMITIVES[kind])
        if kind == "array":
            if "items" not in node:
                self.uses_any = True
                return _Type.of("list[Any]")
            item = self.type_of(node["items"], f"{where}.items")
            return _Type.of(f"list[{item.annotation}]", item.values)
        if kind == "object" or (kind is None and "additionalProperties" in node):
            if node.get("properties"):
                raise CodegenError(f"{where}: an object with properties outside $defs")
            values = node.get("additionalProperties", True)
            if values is True or values == {}:
                self.uses_any = True
                return _Type.of("dict[str, Any]")
            if values is False:
                raise CodegenError(f"{where}: an object that allows no keys")
            item = self.type_of(values, f"{where}.additionalProperties")
            return _Type.of(f"dict[str, {item.annotation}]", item.values)
        if kind is None and not set(node) - _ANNOTATIONS:
            self.uses_any = True
            return _Type.of("Any")
        raise CodegenError(f"{where}: unsupported type {kind!r}")

    @staticmethod
    def _union(options: list[_Type]) -> _Type:
        names: list[str] = []
        for option in options:  # None last, each member once
            for member in option.members:
                if member not in names:
                    names.append(member)
        if "Any" in names:
            return _Type.of("Any")
        if "None" in names:
            names = [n for n in names if n != "None"] + ["None"]
        return _Type(tuple(names), [v for o in options for v in o.values])

    # -- models ----------------------------------------------------------------------------

    def _class(self, name: str, node: dict[str, Any], where: str) -> _Class:
        if node.get("type") != "object":
            raise CodegenError(f"{where}: a named schema that is not an object")
        unknown = set(node) - _ANNOTATIONS - {"type", "properties", "required",
                                              "additionalProperties"}
        if unknown:
            raise CodegenError(f"{where}: unsupported schema keys {sorted(unknown)}")
        required = set(node.get("required", []))
        fields = [self._field(key, value, key in required, f"{where}.{key}")
                  for key, value in node.get("properties", {}).items()]
        extra = node.get("additionalProperties", False)
        extra_values = None
        if isinstance(extra, dict) and extra:
            extra_values = self.type_of(extra, f"{where}.additionalProperties").annotation
        title = node.get("title")
        return _Class(name, node.get("description"),
                      title if isinstance(title, str) and title != name else None,
                      fields, extra_values)

    def _field(self, key: str, node: Any, required: bool, where: str) -> _Field:
        typed = self.type_of(node, where)
        annotation = typed.annotation
        attribute = _attribute(key)
        kwargs: list[tuple[str, str]] = []
        default: str | None = None
        if not required:
            if "default" in node:
                value = node["default"]
                if isinstance(value, (list, dict)) and value:
                    kwargs.append(("default_factory", f"lambda: {_pyvalue(value)}"))
                elif isinstance(value, list):
                    kwargs.append(("default_factory", "list"))
                elif isinstance(value, dict):
                    kwargs.append(("default_factory", "dict"))
                else:
                    default = _pyvalue(value)
            elif annotation.startswith("list["):
                kwargs.append(("default_factory", "list"))
            elif annotation.startswith("dict["):
                kwargs.append(("default_factory", "dict"))
            else:  # optional with no default written: absent reads as None
                if not typed.nullable:
                    annotation = f"{annotation} | None"
                default = "None"
        if attribute != key:
            kwargs.append(("alias", _pystr(key)))
        title = node.get("title") if isinstance(node, dict) else None
        if isinstance(title, str) and title != key.replace("_", " ").title():
            kwargs.append(("title", _pystr(title)))
        description = node.get("description") if isinstance(node, dict) else None
        if isinstance(description, str):
            kwargs.append(("description", _pystr(description)))
        if kwargs and default is not None:
            kwargs.insert(0, ("default", default))
            default = None
        values = list(dict.fromkeys(typed.values))
        comment = " | ".join(_pyvalue(v) for v in values) if values else None
        if kwargs:
            self.uses_field = True
        return _Field(key, attribute, annotation, comment, kwargs, default)

    def _order(self) -> list[str]:
        """``$defs`` keys in the order the document reaches them from its root, each after the
        ones it refers to (so no forward references); unreached ones last, by name."""
        done: list[str] = []
        seen: set[str] = set()

        def refs(node: Any) -> Iterator[str]:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/$defs/"):
                    yield ref[len("#/$defs/"):]
                for key, value in node.items():
                    if key != "$defs":
                        yield from refs(value)
            elif isinstance(node, list):
                for value in node:
                    yield from refs(value)

        def visit(key: str) -> None:
            if key in seen or key not in self.defs:
                return
            seen.add(key)
            for dependency in refs(self.defs[key]):
                visit(dependency)
            done.append(key)

        for key in [*refs(self.schema), *sorted(self.defs)]:
            visit(key)
        return done

    def classes(self) -> list[_Class]:
        body = {k: v for k, v in self.schema.items() if k != "$defs"}
        classes = [*(self._class(self.names[key], self.defs[key], f"$defs.{key}")
                     for key in self._order()), self._class(self.root, body, "#")]
        for cls in classes:
            cls.doc = cls.doc or self.docs.get(cls.name)
        return classes


# -- writing Python ------------------------------------------------------------------------

def _docstring(text: str, indent: str) -> list[str]:
    text = " ".join(text.split())
    if '"""' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    width = LINE - len(indent) - 6
    words, lines, current = text.split(" "), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return ([f'{indent}"""{lines[0]}'] + [f"{indent}{line}" for line in lines[1:]]
            + [f'{indent}"""'])


def _field_lines(item: _Field) -> list[str]:
    head = f"    {item.attribute}: {item.annotation}"
    if not item.kwargs:
        lines = [head if item.default is None else f"{head} = {item.default}"]
    else:
        flat = f"{head} = Field({', '.join(f'{k}={v}' for k, v in item.kwargs)})"
        lines = [flat] if len(flat) <= LINE else _exploded(head, item.kwargs)
    if item.comment is not None:
        if len(lines) == 1 and len(f"{lines[0]}  # {item.comment}") <= LINE:
            lines[0] = f"{lines[0]}  # {item.comment}"
        else:
            lines.insert(0, f"    # {item.comment}")
    return lines


def _exploded(head: str, kwargs: list[tuple[str, str]]) -> list[str]:
    """``head = Field(`` with one argument a line, long strings cut into pieces."""
    lines = [f"{head} = Field("]
    for key, value in kwargs:
        if len(f"        {key}={value},") <= LINE or not value.startswith('"'):
            lines.append(f"        {key}={value},")
            continue
        lines.append(f"        {key}=(")
        lines.extend(f"            {_pystr(piece)}"
                     for piece in _split(json.loads(value), LINE - 12))
        lines.append("        ),")
    lines.append("    )")
    return lines


def render_models(schema: dict[str, Any], *, header: Sequence[str], doc: str,
                  docs: Mapping[str, str] | None = None) -> str:
    """Python source of pydantic models for ``schema`` (see the module docstring): ``header``
    lines, then the module docstring ``doc``; ``docs`` documents models (by class name) whose
    schema has no description."""
    translator = SchemaTranslator(schema, docs=docs)
    classes = translator.classes()
    pydantic_names = ["BaseModel", "ConfigDict"] + (["Field"] if translator.uses_field else [])
    lines = [*header, doc, "", "from __future__ import annotations", ""]
    if translator.uses_any:
        lines += ["from typing import Any", ""]
    lines += [f"from pydantic import {', '.join(pydantic_names)}", "", "__all__ = ["]
    lines += [f"    {_pystr(c.name)}," for c in sorted(classes, key=lambda c: c.name)]
    lines += ["]", "", "",
              "class _Model(BaseModel):",
              '    """Keys this client does not know are kept (``model_extra``), never an '
              'error."""', "",
              '    model_config = ConfigDict(extra="allow", populate_by_name=True, '
              "protected_namespaces=())"]
    for cls in classes:
        lines += ["", "", f"class {cls.name}(_Model):"]
        if cls.doc:
            lines += [*_docstring(cls.doc, "    "), ""]
        if cls.title:
            lines += [f"    model_config = ConfigDict(title={_pystr(cls.title)})", ""]
        if cls.extra_values:
            lines += [f"    __pydantic_extra__: dict[str, {cls.extra_values}]", ""]
        for item in cls.fields:
            lines += _field_lines(item)
        if not cls.fields and not cls.doc and not cls.title:
            lines.append("    pass")
        while lines[-1] == "":
            lines.pop()
    return "\n".join(lines) + "\n"


def render_client_report() -> str:
    """What ``client/layerlens_client/report.py`` must hold for the registered analysis kinds."""
    from layerlens.report.schema import report_model

    header = [f"# Generated by `{CLIENT_REPORT_COMMAND}` from the engine's report schema.",
              "# DO NOT EDIT: change the engine, then run that command again."]
    return render_models(report_model().model_json_schema(), header=header,
                         doc=CLIENT_REPORT_DOC, docs=CLIENT_REPORT_DOCS)


@dataclass(frozen=True)
class Target:
    path: Path
    render: Callable[[], str]
    command: str


TARGETS = {"client-report": Target(CLIENT_REPORT, render_client_report, CLIENT_REPORT_COMMAND)}


def stale(target: Target) -> str | None:
    """Why ``target``'s file is not what its command writes; None when it is."""
    try:
        current = target.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if current == target.render():
        return None
    where = target.path.relative_to(ROOT) if target.path.is_relative_to(ROOT) else target.path
    state = "is missing" if current is None else "is not what the engine's schemas generate"
    return (f"{where} {state} (an analysis kind or report section changed?): "
            f"run `{target.command}` and commit the result")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.codegen", description=__doc__.split(
        "\n\n")[0] if __doc__ else None)
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file is stale")
    args = parser.parse_args(argv)
    target = TARGETS[args.target]
    if args.check:
        problem = stale(target)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{target.path.relative_to(ROOT)} is up to date")
        return 0
    text = target.render()
    target.path.write_text(text, encoding="utf-8")
    print(f"wrote {target.path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
