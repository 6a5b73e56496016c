"""Tools from plain Python functions: the schema a model sees, argument checks, the call.

``Tool.from_function`` (or the ``@tool`` decorator) reads a function's signature and docstring
once: a pydantic model built from the parameters validates the model's arguments, and its JSON
schema, tidied for small local models (no ``title`` keys, ``$defs`` inlined unless a type refers
to itself), becomes the ``parameters`` of the OpenAI tool schema.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
import types
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    Concatenate,
    Generic,
    ParamSpec,
    Self,
    TypeVar,
    get_args,
    get_origin,
    overload,
)

import orjson
import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, to_jsonable_python

from llmtap._docstrings import parse_docstring
from llmtap._errors import LLMUsageError

__all__ = [
    "Tool",
    "format_validation_errors",
    "tidy_schema",
    "to_tool_output",
    "tool",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")

#: What OpenAI-compatible servers accept as a function name.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Keywords whose value is one subschema, a list of them, or a mapping of name to subschema;
#: every other keyword's value is data (``default``, ``enum``, ``const``...) and left alone.
_SUBSCHEMA = frozenset(
    {"items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else"}
)
_SUBSCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})

_DEFS_PREFIX = "#/$defs/"


class _Recursive(Exception):
    """A ``$ref`` that refers back to a type being expanded: ``$defs`` must stay."""


def _walk(node: Any, visit: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``visit`` to every subschema of ``node``, bottom-up, following the keywords'
    structure (property names and data values are never taken for schemas)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _SUBSCHEMA:
            out[key] = _walk(value, visit)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_walk(item, visit) for item in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _walk(item, visit) for name, item in value.items()}
        else:
            out[key] = value
    return visit(out)


def _drop_title(node: dict[str, Any]) -> dict[str, Any]:
    """No ``title``; a lone ``allOf`` member merged into its node (older pydantic wraps a
    ``$ref`` that has a sibling, such as a description, in ``allOf``); ``type`` first, where
    a reader looks for it."""
    if isinstance(node.get("title"), str):
        del node["title"]
    wrapped = node.get("allOf")
    if isinstance(wrapped, list) and len(wrapped) == 1 and isinstance(wrapped[0], dict):
        inner = wrapped[0]
        if not set(inner) & (set(node) - {"allOf"}):
            del node["allOf"]
            node = {**inner, **node}
    if "type" in node:
        return {"type": node.pop("type"), **node}
    return node


def _inline(node: Any, defs: Mapping[str, Any], expanding: frozenset[str]) -> Any:
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX) and ref[len(_DEFS_PREFIX) :] in defs:
        name = ref[len(_DEFS_PREFIX) :]
        if name in expanding:
            raise _Recursive(name)
        target = _inline(defs[name], defs, expanding | {name})
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return {**target, **_inline(siblings, defs, expanding)}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$defs":
            continue
        if key in _SUBSCHEMA:
            out[key] = _inline(value, defs, expanding)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [_inline(item, defs, expanding) for item in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _inline(item, defs, expanding) for name, item in value.items()}
        else:
            out[key] = value
    return out


def tidy_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema made plainer for small models: ``title`` keys dropped, and
    ``$defs`` inlined where they are referenced (kept, and valid, when a type refers to itself).

    Example:
        >>> tidy_schema({"title": "A", "type": "object", "properties": {"title": {"title":
        ...     "Title", "type": "string"}}})
        {'type': 'object', 'properties': {'title': {'type': 'string'}}}
    """
    tidied: dict[str, Any] = _walk(schema, _drop_title)
    defs = tidied.get("$defs")
    if not isinstance(defs, dict):
        return tidied
    try:
        inlined: dict[str, Any] = _inline(tidied, defs, frozenset())
    except _Recursive:
        return tidied
    return inlined


def format_validation_errors(errors: Sequence[ErrorDetails], *, limit: int = 8) -> str:
    """Pydantic's errors as one short line each: ``where: what (got <input>)``.

    Example:
        >>> format_validation_errors([{"type": "missing", "loc": ("city",),
        ...     "msg": "Field required", "input": {}}])
        'city: Field required'
    """
    lines = []
    for error in errors[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "(the whole value)"
        line = f"{where}: {error['msg']}"
        if error["type"] not in {"missing", "extra_forbidden", "json_invalid"}:
            shown = orjson.dumps(error.get("input"), default=repr).decode()
            line += f" (got {shown[:60] + '…' if len(shown) > 60 else shown})"
        lines.append(line)
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)  # raises for a type it does not know


def to_tool_output(value: Any) -> str:
    """A tool's return value as the text of a ``tool`` message: a string as it is, anything
    else as JSON (pydantic models, dataclasses, dicts, lists...); ``str()`` as a last resort.

    Example:
        >>> to_tool_output({"temp": 21}), to_tool_output("sunny"), to_tool_output(None)
        ('{"temp":21}', 'sunny', 'null')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return str(value)


def _has_description(annotation: Any) -> bool:
    """Whether an ``Annotated[..., Field(description=...)]`` describes the parameter already."""
    if get_origin(annotation) is not Annotated:
        return False
    return any(
        isinstance(meta, FieldInfo) and meta.description for meta in get_args(annotation)[1:]
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 -- an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class Tool(Generic[P, R]):
    """A Python function a model can call, with the OpenAI tool schema that describes it.

    Build one with :meth:`from_function` or the :func:`tool` decorator. The schema comes from
    the signature (type hints, read with pydantic: primitives, ``Literal``, enums,
    ``X | None``, lists, dicts, pydantic models, dataclasses; a parameter with a default is
    not required) and from the docstring (its description, and Google-, NumPy- or reST-style
    parameter descriptions). A ``Tool`` stays callable like the function it wraps, and
    ``tools=`` of :meth:`LLMClient.chat`, :meth:`~LLMClient.stream` and
    :meth:`~LLMClient.run_tools` accepts it.

    On a method (``@tool`` on a ``def`` in a class body) a ``Tool`` works as a method does:
    the schema leaves out ``self``, and ``service.count`` is a ``Tool`` bound to ``service``
    (call it, or pass it to ``run_tools``). ``Service.count``, taken from the class, describes
    the same parameters and is called with the instance first, like the plain method; having
    no instance, ``run_tools`` refuses it. ``@tool`` refuses ``staticmethod`` and
    ``classmethod`` objects: put ``@staticmethod`` above ``@tool`` (the tool then keeps every
    parameter), or use a module-level function.

    Attributes:
        name: The function name the model sees.
        description: What the tool does, as the model sees it.
        fn: The wrapped function (sync or async).
        is_async: Whether calls are awaited on the event loop (``async def``, or an object
            with an async ``__call__``) rather than run in a worker thread.
        parameters: The JSON schema of the arguments.

    Example:
        >>> from typing import Literal
        >>> @tool
        ... def get_weather(city: str, unit: Literal["C", "F"] = "C") -> str:
        ...     '''Current weather in a city.
        ...
        ...     Args:
        ...         city: The city's name, like "Paris".
        ...         unit: Temperature unit.
        ...     '''
        ...     return f"21 °{unit} in {city}"
        >>> get_weather.to_schema()["function"]["parameters"]["required"]
        ['city']
        >>> get_weather("Paris")  # still an ordinary function
        '21 °C in Paris'
        >>> class Counter:
        ...     def __init__(self, start: int) -> None:
        ...         self.start = start
        ...     @tool
        ...     def count(self, step: int) -> int:
        ...         '''Count on from the start.'''
        ...         return self.start + step
        >>> Counter(10).count(2), Counter(10).count.parameters["required"]
        (12, ['step'])
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if isinstance(fn, staticmethod):
            raise LLMUsageError(
                "@tool cannot wrap a staticmethod: put @staticmethod above @tool, or define "
                "the function at module level"
            )
        if isinstance(fn, classmethod):
            raise LLMUsageError(
                "@tool cannot wrap a classmethod: make it a plain method (bound to an "
                "instance) or a module-level function"
            )
        method_of: type[Any] | None = None
        if isinstance(fn, Tool):
            method_of = fn.method_of
            fn = fn.fn
        self.fn: Callable[P, R] = fn
        functools.update_wrapper(self, fn)
        self.name = name if name is not None else _function_name(fn)
        if not _NAME.fullmatch(self.name):
            raise LLMUsageError(
                f"{self.name!r} cannot be a tool name: servers accept 1 to 64 letters, digits, "
                "'_' and '-'; pass name=... to tool() or Tool.from_function()"
            )
        self.is_async = _is_async(fn)
        docs = parse_docstring(inspect.getdoc(fn.func if isinstance(fn, functools.partial) else fn))
        self.description = description if description is not None else docs.description
        self._docs = docs.params
        self.method_of: type[Any] | None = None
        self._describe(_signature(fn, self.name))
        if method_of is not None:
            self._make_method(method_of)

    def _describe(self, signature: inspect.Signature) -> None:
        """Build the arguments' validator and JSON schema from ``signature``."""
        self._signature = signature
        self._model = _arguments_model(self.name, signature, self._docs)
        try:
            schema = self._model.model_json_schema()
        except pydantic.PydanticUserError as exc:  # a type pydantic cannot describe
            raise LLMUsageError(
                f"Tool {self.name!r}: a parameter's type has no JSON schema ({exc}). Use JSON "
                "types, pydantic models or dataclasses for tool parameters"
            ) from exc
        self.parameters: dict[str, Any] = tidy_schema(schema)

    def _make_method(self, owner: type[Any]) -> None:
        """A method of ``owner``: its first parameter is the instance, not the model's to set."""
        parameters = list(self._signature.parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not parameters or parameters[0].kind not in positional:
            raise LLMUsageError(
                f"Tool {self.name!r} is defined in {owner.__qualname__} but takes no instance "
                "(self) parameter; give it one, or define it at module level"
            )
        self.method_of = owner
        self._describe(self._signature.replace(parameters=parameters[1:]))

    def __set_name__(self, owner: type[Any], name: str) -> None:
        # Only a function defined in this class's body is a method; a tool made elsewhere and
        # set as a class attribute stays the function it was.
        qualname = getattr(self.fn, "__qualname__", "")
        if self.method_of is None and qualname.rpartition(".")[0] == owner.__qualname__:
            self._make_method(owner)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self: Tool[Concatenate[Any, P2], R], instance: object, owner: type[Any] | None = None
    ) -> Tool[P2, R]: ...

    def __get__(self, instance: object, owner: type[Any] | None = None) -> Tool[Any, R]:
        """``instance.method``: the tool bound to ``instance``, as a function binds."""
        if instance is None or self.method_of is None:
            return self
        bound = copy.copy(self)
        bound.fn = types.MethodType(self.fn, instance)
        bound.__wrapped__ = bound.fn  # type: ignore[attr-defined]
        bound.method_of = None
        return bound

    @classmethod
    def from_function(
        cls,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool[P, R]:
        """Wrap a function as a tool.

        Args:
            fn: The function, sync or async. Its parameters must be named (no ``*args`` or
                ``**kwargs``); their type hints may be strings (``from __future__ import
                annotations``) that resolve in the function's module.
            name: The name the model sees; defaults to the function's ``__name__``.
            description: What the tool does; defaults to the docstring's description.

        Raises:
            LLMUsageError: The function cannot be described to a model: a nameless callable,
                ``*args``/``**kwargs``, a type hint that does not resolve, a type with no
                JSON schema.
        """
        return cls(fn, name=name, description=description)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, description={self.description!r})"

    def to_schema(self) -> dict[str, Any]:
        """The OpenAI tool schema: ``{"type": "function", "function": {"name",
        "description", "parameters"}}`` (a fresh copy each time)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments against the signature and convert them (a dict becomes the
        parameter's pydantic model or dataclass, a string its enum member, ...).

        Args:
            arguments: The arguments as the model sent them (a decoded JSON object).

        Returns:
            Every parameter by name, defaults filled in, ready for ``fn(**kwargs)``.

        Raises:
            pydantic.ValidationError: The arguments do not fit: a missing or unknown
                parameter, a value of the wrong type. Its ``errors()`` say which.
        """
        validated = self._model.model_validate(arguments)
        return {
            parameter: getattr(validated, field)
            for field, parameter in zip(
                type(validated).model_fields, self._signature.parameters, strict=True
            )
        }

    async def call(self, arguments: Mapping[str, Any]) -> str:
        """Validate ``arguments``, call the function, and give its result as text.

        An async function is awaited; a sync one runs in a worker thread
        (``asyncio.to_thread``) so that it cannot block the event loop. The result becomes
        text as :func:`to_tool_output` says: a string as it is, anything else as JSON.

        Raises:
            pydantic.ValidationError: The arguments do not fit the signature; the function was
                not called.
            Exception: Whatever the function raised.
        """
        return await self.call_validated(self.validate(arguments))

    async def call_validated(self, kwargs: dict[str, Any]) -> str:
        """Call the function with arguments :meth:`validate` gave; its result as text."""
        positional = [
            kwargs.pop(name)
            for name, parameter in self._signature.parameters.items()
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        function: Callable[..., Any] = self.fn
        if self.is_async:
            result = await function(*positional, **kwargs)
        else:
            result = await asyncio.to_thread(function, *positional, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        return to_tool_output(result)


def _function_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if isinstance(fn, functools.partial):
        name = getattr(fn.func, "__name__", None)
    if name is None and callable(fn):
        name = type(fn).__name__
    return name if isinstance(name, str) else ""


def _signature(fn: Callable[..., Any], name: str) -> inspect.Signature:
    try:
        signature = inspect.signature(fn, eval_str=True)
    except NameError as exc:
        raise LLMUsageError(
            f"Tool {name!r}: a type hint does not resolve ({exc}). Define the types it names "
            "at module level, where the function's module can see them"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise LLMUsageError(f"Tool {name!r}: its signature cannot be read ({exc})") from exc
    if isinstance(fn, functools.partial):  # what the partial binds is not the model's to set
        signature = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name not in fn.keywords]
        )
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise LLMUsageError(
                f"Tool {name!r}: *{parameter.name} cannot be described to a model; give the "
                "function named parameters instead"
            )
    return signature


def _arguments_model(
    name: str, signature: inspect.Signature, docs: Mapping[str, str]
) -> type[BaseModel]:
    """A pydantic model of the parameters. Fields get neutral names (``p0``...) with the
    parameter names as aliases, so no parameter (``json``, ``model_config``...) can clash
    with a ``BaseModel`` attribute."""
    fields: dict[str, Any] = {}
    for number, parameter in enumerate(signature.parameters.values()):
        annotation: Any = (
            Any if parameter.annotation is inspect.Parameter.empty else parameter.annotation
        )
        default = parameter.default
        if isinstance(default, FieldInfo):  # def f(x: int = Field(3, ge=0))
            annotation, default = Annotated[annotation, default], inspect.Parameter.empty
        extra: dict[str, Any] = {}
        doc = docs.get(parameter.name)
        if doc and not _has_description(annotation):
            extra["description"] = doc
        if default is inspect.Parameter.empty:
            info = Field(alias=parameter.name, **extra)
        else:
            info = Field(default, alias=parameter.name, **extra)
        fields[f"p{number}"] = (annotation, info)
    try:
        return pydantic.create_model(
            name,
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
    except pydantic.PydanticUserError as exc:
        raise LLMUsageError(
            f"Tool {name!r}: a parameter's type cannot be validated ({exc}). Use JSON types, "
            "pydantic models or dataclasses for tool parameters"
        ) from exc


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function a :class:`Tool`; use bare (``@tool``) or with arguments.

    Args:
        fn: The function (when used bare).
        name: The name the model sees; defaults to the function's name.
        description: What the tool does; defaults to the docstring's description.

    Example:
        >>> @tool(name="lookup", description="Find a user by id.")
        ... async def find_user(user_id: int) -> dict[str, str]:
        ...     return {"name": "Ada"}
        >>> find_user.name
        'lookup'
    """
    if fn is not None:
        return Tool(fn, name=name, description=description)

    def decorate(function: Callable[P, R]) -> Tool[P, R]:
        return Tool(function, name=name, description=description)

    return decorate
