"""The instruction set: syscalls, their JSON schemas and the syscall table.

A syscall is a typed Python function with a docstring. Its JSON schema comes
from the signature (types, defaults, ``Literal`` enums) and the docstring
(descriptions). A parameter named ``ctx`` is not part of the schema: the kernel
passes a :class:`SyscallContext` there (the filesystem, the CPU, the pid).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal

import docstring_parser
import jsonschema

from llmos_shell.errors import LlmosError, UsageError
from llmos_shell.hookspecs import SyscallContext  # noqa: F401  (drivers type their ctx with it)

#: What a syscall may declare it does. The kernel's approval policy reads these.
CAPABILITIES = {
    "reads_fs": "reads files of the SQLite filesystem",
    "writes_fs": "creates or changes files of the SQLite filesystem",
    "irreversible": "does something that cannot be undone (deletes, sends)",
    "uses_cpu": "runs the model (goes through the kernel's CPU queue)",
    "audio_out": "produces sound",
    "reads_host": "reads files of the host machine",
    "read_only": "changes nothing: only reads or computes (an MCP tool's readOnlyHint)",
}

# A name, or "server.tool" for a tool of an MCP server (whose tool names may hold hyphens).
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}(?:\.[A-Za-z0-9_][A-Za-z0-9_-]{0,63})?$")


class SyscallError(LlmosError):
    """A syscall that cannot be registered or called as asked."""


class ArgumentError(UsageError):
    """Arguments that do not match a syscall's schema."""


@dataclass
class Syscall:
    """One entry of the syscall table."""

    name: str
    function: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    capabilities: frozenset[str] = frozenset()
    driver: str = ""
    wants_ctx: bool = False
    declared: bool = False  # a function declared by a task: calls are returned, not run
    #: Requests as a user types them that this syscall serves (the kernel's router learns from them).
    examples: tuple[str, ...] = ()
    #: What of the result the user is shown as the reply: a key of a dict result, "*" for the whole
    #: result, None when the result is data the model answers from (a file read to answer a question).
    output: str | None = None
    #: Seconds a call may take before it is cut off (None: the kernel's default).
    timeout: float | None = None
    #: MIME patterns ("image/*", "text/*", "inode/directory") of the files its ``path`` argument takes.
    reads: tuple[str, ...] = ()
    #: The parameter that takes the previous step's output, as a command reads a pipe ("text").
    input: str | None = None
    #: Reads argument values from the user's request as they said them ("... into Catalan" ->
    #: target_lang "ca"): the kernel sets these instead of having the model decode them.
    from_request: Callable[[str], dict[str, Any]] | None = None
    #: Host folders (or files) its path parameters reach ("~/data", "/srv/photos"): an MCP server's.
    #: A request naming a path in one is for such a syscall, never the llmos filesystem's.
    places: tuple[str, ...] = ()

    def reads_kind(self, mime: str) -> bool:
        """Does the ``path`` argument take a file of this MIME type?"""
        return any(mime == p or (p.endswith("/*") and mime.startswith(p[:-1])) for p in self.reads)

    @property
    def irreversible(self) -> bool:
        return "irreversible" in self.capabilities

    def tool_schema(self) -> dict[str, Any]:
        """The OpenAI-style tool entry, as chat templates expect it."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check ``arguments`` against the schema; return them with defaults filled in."""
        if not isinstance(arguments, dict):
            raise ArgumentError(f"{self.name}: arguments must be a JSON object, got {type(arguments).__name__}")
        validator = jsonschema.Draft202012Validator(self.parameters)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            raise ArgumentError(f"{self.name}: {where + ': ' if where else ''}{error.message}")
        filled = dict(arguments)
        for key, prop in self.parameters.get("properties", {}).items():
            if key not in filled and "default" in prop:
                filled[key] = prop["default"]
        return filled

    def __call__(self, arguments: dict[str, Any], ctx: SyscallContext | None = None) -> Any:
        kwargs = self.validate(arguments)
        if self.wants_ctx:
            kwargs["ctx"] = ctx or SyscallContext()
        return self.function(**kwargs)


# --- schema from a signature ----------------------------------------------------------

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def type_schema(annotation: Any) -> dict[str, Any]:
    """JSON schema of a Python type annotation (str, int, float, bool, list[X], dict, Literal, Optional)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        schema = {"enum": list(args)}
        kinds = {type(a) for a in args}
        if len(kinds) == 1 and next(iter(kinds)) in _SIMPLE:
            schema["type"] = _SIMPLE[next(iter(kinds))]
        return schema
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return type_schema(members[0])
        return {"anyOf": [type_schema(m) for m in members]}
    if origin in (list, tuple, set, frozenset):
        schema = {"type": "array"}
        if args and args[0] is not Ellipsis:
            schema["items"] = type_schema(args[0])
        return schema
    if origin is dict:
        return {"type": "object"}
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    raise SyscallError(f"unsupported parameter type {annotation!r}")


def function_schema(function: Callable[..., Any]) -> tuple[str, dict[str, Any], bool]:
    """Return (description, parameters schema, wants_ctx) for a syscall function."""
    doc = docstring_parser.parse(inspect.getdoc(function) or "")
    description = " ".join(p for p in (doc.short_description, doc.long_description) if p).strip()
    if not description:
        raise SyscallError(f"{function.__name__}: a syscall needs a docstring saying what it does")
    param_docs = {p.arg_name: (p.description or "").strip() for p in doc.params}
    hints = typing.get_type_hints(function)
    properties: dict[str, Any] = {}
    required: list[str] = []
    wants_ctx = False
    for name, param in inspect.signature(function).parameters.items():
        if name == "ctx":
            wants_ctx = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SyscallError(f"{function.__name__}: *args and **kwargs cannot be described to the model")
        if param.annotation is param.empty:
            raise SyscallError(f"{function.__name__}: parameter {name!r} needs a type annotation")
        prop = type_schema(hints.get(name, param.annotation))
        if param_docs.get(name):
            prop["description"] = param_docs[name]
        if param.default is param.empty:
            required.append(name)
        elif param.default is not None:
            prop["default"] = param.default
        properties[name] = prop
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return description, schema, wants_ctx


def make_syscall(function: Callable[..., Any], *, name: str | None = None,
                 capabilities: typing.Iterable[str] = (), driver: str = "", examples: typing.Iterable[str] = (),
                 output: str | None = None, timeout: float | None = None, reads: typing.Iterable[str] = (),
                 input: str | None = None, parameters: dict[str, Any] | None = None,
                 description: str | None = None,
                 from_request: Callable[[str], dict[str, Any]] | None = None,
                 places: typing.Iterable[str] = ()) -> Syscall:
    """Build a :class:`Syscall` from a typed, documented function.

    ``parameters`` (a JSON Schema) and ``description`` describe a function that takes its arguments
    as ``**kwargs`` (a bridge to another tool protocol, such as MCP) instead of its signature."""
    if not callable(function):
        raise SyscallError(f"register() needs a function, got {function!r}")
    name = name or function.__name__
    if not NAME_RE.match(name):
        raise SyscallError(f"invalid syscall name {name!r}")
    unknown = set(capabilities) - CAPABILITIES.keys()
    if unknown:
        raise SyscallError(f"{name}: unknown capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")
    examples = tuple(examples)
    if not all(isinstance(e, str) and e.strip() for e in examples):
        raise SyscallError(f"{name}: examples must be non-empty strings (requests as a user types them)")
    if output is not None and not isinstance(output, str):
        raise SyscallError(f"{name}: output names a field of the result (or '*' for all of it)")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise SyscallError(f"{name}: timeout must be a positive number of seconds")
    if parameters is None:
        description, parameters, wants_ctx = function_schema(function)
    else:
        description, parameters, wants_ctx = _schema_described(function, name, parameters, description)
    reads = tuple(reads)
    if reads and "path" not in parameters["properties"]:
        raise SyscallError(f"{name}: reads= describes the 'path' parameter, and there is none")
    if input is not None and input not in parameters["properties"]:
        raise SyscallError(f"{name}: input={input!r} names no parameter")
    if from_request is not None and not callable(from_request):
        raise SyscallError(f"{name}: from_request must be a function of the request's text")
    places = tuple(places)
    if not all(isinstance(p, str) and p.startswith(("/", "~")) for p in places):
        raise SyscallError(f"{name}: places are host paths (\"/srv/photos\", \"~/data\")")
    return Syscall(name=name, function=function, description=description, parameters=parameters,
                   capabilities=frozenset(capabilities), driver=driver, wants_ctx=wants_ctx,
                   examples=examples, output=output, timeout=timeout, reads=reads, input=input,
                   from_request=from_request, places=places)


def _schema_described(function: Callable[..., Any], name: str, parameters: Any,
                      description: str | None) -> tuple[str, dict[str, Any], bool]:
    if not description or not isinstance(description, str):
        raise SyscallError(f"{name}: a syscall described by a schema needs a description")
    parameters = normalise_schema(parameters)
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise SyscallError(f"{name}: parameters must be a JSON Schema of an object")
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError as error:
        raise SyscallError(f"{name}: invalid parameters schema: {error.message}") from None
    parameters = {"type": "object", "properties": {}, **parameters}
    return description.strip(), parameters, "ctx" in inspect.signature(function).parameters


def declared_syscall(spec: dict[str, Any]) -> Syscall:
    """A function declared by a task file (OpenAI/BFCL JSON-Schema style): calls are returned, not run.

    Any valid JSON Schema is accepted (the decoding grammar loosens what it cannot express;
    arguments are validated against the schema itself). One that is not valid, or whose
    ``$ref`` points nowhere inside it, raises ``UsageError`` or ``jsonschema``'s ``SchemaError``.
    """
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UsageError("a declared function needs a 'name'")
    parameters = normalise_schema(spec.get("parameters") or {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise UsageError("parameters must be a JSON Schema object")
    jsonschema.Draft202012Validator.check_schema(parameters)
    # Only references inside the schema are followed (nothing is fetched): check them all now,
    # not when a call's arguments first reach one.
    resolver = Registry().with_resource("urn:llmos:parameters", DRAFT202012.create_resource(parameters)) \
        .resolver("urn:llmos:parameters")
    data = {"enum", "const", "default", "examples"}  # values, not schemas: a "$ref" there is data

    def refs(node: Any) -> typing.Iterator[str]:
        if isinstance(node, list):
            for item in node:
                yield from refs(item)
        elif isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for key, value in node.items():
                if key not in data:
                    yield from refs(value)

    for ref in refs(parameters):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise UsageError(f"$ref {ref!r} points nowhere in the schema "
                             "(only references inside it are followed)") from None

    def not_executed(**_: Any) -> Any:  # pragma: no cover - never called
        raise SyscallError(f"{spec['name']} is declared, not executable")

    return Syscall(name=spec["name"], function=not_executed, description=str(spec.get("description", "")),
                   parameters=parameters, declared=True, driver="declared")


_TYPE_ALIASES = {"dict": "object", "float": "number", "int": "integer", "str": "string", "bool": "boolean",
                 "list": "array", "tuple": "array", "any": None, "double": "number", "long": "integer"}


def normalise_schema(schema: Any) -> Any:
    """Turn BFCL-style types ("dict", "float", "tuple", "any", "String") into JSON Schema ones.

    Boolean subschemas become the objects that mean the same (``true``: ``{}``, ``false``:
    ``{"not": {}}``) so that code reading a schema only meets objects; ``additionalProperties:
    false`` stays as it is. Values (``enum``, ``const``, ``default``, ``examples``) are never
    rewritten, and a list is normalised item by item.
    """
    maps = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
    lists = {"anyOf", "oneOf", "allOf", "prefixItems"}
    single = {"items", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
              "unevaluatedItems", "additionalProperties", "unevaluatedProperties"}

    def sub(value: Any) -> Any:  # a subschema
        if value is True:
            return {}
        if value is False:
            return {"not": {}}
        return normalise_schema(value)

    def mapped_type(name: Any) -> Any:
        if not isinstance(name, str):
            return name
        lowered = name.lower()
        if lowered in _TYPE_ALIASES:
            return _TYPE_ALIASES[lowered]
        known = {"object", "array", "string", "number", "integer", "boolean", "null"}
        return lowered if lowered in known else name

    if isinstance(schema, list):
        return [normalise_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            types = [mapped_type(t) for t in (value if isinstance(value, list) else [value])]
            if None in types:  # "any": no type constraint at all
                continue
            types = list(dict.fromkeys(types)) if all(isinstance(t, str) for t in types) else types
            out[key] = types if isinstance(value, list) else types[0]
        elif key in maps and isinstance(value, dict):
            out[key] = {k: sub(v) for k, v in value.items()}
        elif key in lists and isinstance(value, list):
            out[key] = [sub(v) for v in value]
        elif key in single and isinstance(value, dict):
            out[key] = normalise_schema(value)
        elif key in single and isinstance(value, bool) and key not in ("additionalProperties",
                                                                         "unevaluatedProperties"):
            out[key] = sub(value)
        elif key == "required" and isinstance(value, list):
            out[key] = [v for v in value if isinstance(v, str)]
        else:
            out[key] = value
    if "required" in out and isinstance(out.get("properties"), dict):
        out["required"] = [r for r in out["required"] if r in out["properties"]]
    return out


class SyscallTable:
    """Every syscall the kernel can dispatch, by name."""

    def __init__(self) -> None:
        self._syscalls: dict[str, Syscall] = {}

    def add(self, syscall: Syscall) -> None:
        existing = self._syscalls.get(syscall.name)
        if existing is not None and existing.driver != syscall.driver:
            raise SyscallError(f"syscall {syscall.name!r} is already registered by {existing.driver or 'another driver'}")
        self._syscalls[syscall.name] = syscall

    @classmethod
    def of(cls, syscalls: typing.Iterable[Syscall]) -> "SyscallTable":
        table = cls()
        for syscall in syscalls:
            table.add(syscall)
        return table

    def get(self, name: str) -> Syscall:
        try:
            return self._syscalls[name]
        except KeyError:
            raise UsageError(f"no syscall named {name!r} (see `llmos drivers`)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._syscalls

    def __iter__(self):
        return iter(sorted(self._syscalls.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._syscalls)

    def names(self) -> list[str]:
        return sorted(self._syscalls)

    def without(self, names: typing.Collection[str]) -> "SyscallTable":
        if not names:
            return self
        table = SyscallTable()
        for syscall in self:
            if syscall.name not in names:
                table.add(syscall)
        return table

    def with_capability(self, *capabilities: str) -> "SyscallTable":
        """The syscalls that declare any of ``capabilities``."""
        table = SyscallTable()
        for syscall in self:
            if syscall.capabilities & set(capabilities):
                table.add(syscall)
        return table

    def subset(self, names: typing.Iterable[str]) -> "SyscallTable":
        table = SyscallTable()
        for name in names:
            table.add(self.get(name))
        return table
