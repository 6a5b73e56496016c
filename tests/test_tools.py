"""Tools from Python functions: docstrings, schemas, validation, calling (issue 4).

This module uses ``from __future__ import annotations``, so every tool below has string
annotations that the schema builder must resolve.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import pickle
import threading
import types
from typing import (
    Annotated,
    Any,
    Literal,
    Optional,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import jsonschema
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from llmtap import LLMUsageError, Message
from llmtap._docstrings import Docstring, parse_docstring
from llmtap._errors import LLMParseError, LLMToolLoopError
from llmtap._tools import Tool, format_validation_errors, tidy_schema, to_tool_output, tool
from llmtap.testing import TestServer
from tests.conftest import make_client

# --- types the tools below use (module level, so string annotations resolve) ---------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Point(BaseModel):
    """A point on the grid."""

    x: int
    y: int = 0


@dataclasses.dataclass
class Box:
    corner: Point
    label: str = "box"


class Node(BaseModel):
    value: int
    children: list[Node] = []


# --- docstrings ----------------------------------------------------------------------------


def test_google_docstring_gives_description_and_parameter_descriptions() -> None:
    """Google style: the text before Args is the description, each entry a parameter's."""
    doc = """Get the weather.

        Looks it up in the
        forecast service.

        Args:
            city (str): The city's name,
                like "Paris".
            days: How many days ahead.

        Returns:
            The forecast.
        """
    assert parse_docstring(doc) == Docstring(
        "Get the weather.\n\nLooks it up in the forecast service.",
        {"city": 'The city\'s name, like "Paris".', "days": "How many days ahead."},
    )


def test_numpy_docstring_gives_parameter_descriptions() -> None:
    """NumPy style: a dashed Parameters section, ``name : type`` with indented text; several
    names on one line share the text."""
    doc = """Move a point.

        Parameters
        ----------
        dx, dy : int
            How far to move,
            in cells.
        wrap : bool
            Wrap at the edges.

        Returns
        -------
        Point
            The new point.
        """
    assert parse_docstring(doc) == Docstring(
        "Move a point.",
        {
            "dx": "How far to move, in cells.",
            "dy": "How far to move, in cells.",
            "wrap": ("Wrap at the edges."),
        },
    )


def test_rest_docstring_gives_parameter_descriptions() -> None:
    """reST style: ``:param name:`` and ``:param type name:`` fields with continuation lines;
    ``:returns:`` and ``:type:`` fields are not parameters."""
    doc = """Add two numbers.

        :param a: The first
            number.
        :param int b: The second number.
        :type a: int
        :returns: The sum.
        """
    assert parse_docstring(doc) == Docstring(
        "Add two numbers.", {"a": "The first number.", "b": "The second number."}
    )


def test_docstring_without_sections_is_all_description() -> None:
    """A docstring with no sections is the description, paragraph breaks kept."""
    assert parse_docstring("One.\n\n    Two\n    lines.\n") == Docstring("One.\n\nTwo lines.", {})


def test_missing_docstring_gives_nothing() -> None:
    """No docstring: empty description, no parameter descriptions."""
    assert parse_docstring(None) == Docstring("", {})


def test_doctest_ends_the_description() -> None:
    """An example (``>>>``) is not part of the description."""
    assert parse_docstring("Double it.\n\n>>> double(2)\n4\n").description == "Double it."


# --- schemas -------------------------------------------------------------------------------


def get_weather(city: str, days: int = 1) -> str:
    """Get the weather forecast.

    Args:
        city: The city's name.
        days: How many days ahead.
    """
    return f"{city}: sunny for {days} days"


def test_schema_of_a_plain_function() -> None:
    """Name, description and parameters come from the function; defaults are not required;
    no ``title`` keys; extra arguments are not allowed."""
    assert Tool.from_function(get_weather).to_schema() == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather forecast.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city's name."},
                    "days": {
                        "type": "integer",
                        "default": 1,
                        "description": "How many days ahead.",
                    },
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }


def choose(
    color: Color,
    mode: Literal["fast", "slow"] = "fast",
    size: Optional[Size] = None,  # noqa: UP045 -- the typing spelling must work too
    note: str | None = None,
) -> str:
    """Pick options."""
    return "ok"


def test_schema_of_literal_enum_and_optional_parameters() -> None:
    """Enums and Literals become ``enum`` lists (inlined, no ``$defs``); Optional becomes
    ``anyOf`` with null."""
    assert Tool.from_function(choose).parameters == {
        "type": "object",
        "properties": {
            "color": {"type": "string", "enum": ["red", "green"]},
            "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
            "size": {
                "anyOf": [{"type": "integer", "enum": [1, 2]}, {"type": "null"}],
                "default": None,
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["color"],
        "additionalProperties": False,
    }


def place(box: Box, points: list[Point], weights: dict[str, int] | None = None) -> str:
    """Place a box.

    Args:
        box: Where the box goes.
        points: Points to mark.
    """
    return "placed"


POINT_SCHEMA = {
    "type": "object",
    "description": "A point on the grid.",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}},
    "required": ["x"],
}


#: Whether this pydantic forbids extra keys in a dataclass nested in a model that forbids them
#: (2.14 does, and says so in the schema; older ones take them, and their schemas say so).
_NESTED_FORBIDS = tuple(int(part) for part in pydantic.VERSION.split(".")[:2]) >= (2, 14)


def test_nested_models_and_dataclasses_are_inlined() -> None:
    """A pydantic model and a dataclass inside the parameters are written out in place, with
    their docstrings and without titles or ``$defs``."""
    box: dict[str, Any] = {
        "type": "object",
        "properties": {
            "corner": POINT_SCHEMA,
            "label": {"type": "string", "default": "box"},
        },
        "required": ["corner"],
        "description": "Where the box goes.",
    }
    if _NESTED_FORBIDS:
        box["additionalProperties"] = False
    assert Tool.from_function(place).parameters == {
        "type": "object",
        "properties": {
            "box": box,
            "points": {"type": "array", "items": POINT_SCHEMA, "description": "Points to mark."},
            "weights": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": "integer"}},
                    {"type": "null"},
                ],
                "default": None,
            },
        },
        "required": ["box", "points"],
        "additionalProperties": False,
    }


def total(tree: Node) -> int:
    """Sum a tree."""
    return tree.value + sum(total(child) for child in tree.children)


def test_a_recursive_type_keeps_valid_defs() -> None:
    """A type that contains itself cannot be inlined: ``$defs`` stay, and a JSON schema
    validator follows them."""
    parameters = Tool.from_function(total).parameters
    assert parameters["properties"] == {"tree": {"$ref": "#/$defs/Node"}}
    assert parameters["$defs"] == {
        "Node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "default": []},
            },
            "required": ["value"],
        }
    }
    validator = jsonschema.Draft202012Validator(parameters)
    assert validator.is_valid({"tree": {"value": 1, "children": [{"value": 2}]}})
    assert not validator.is_valid({"tree": {"value": 1, "children": [{"value": "x"}]}})


def test_property_named_title_survives_title_removal() -> None:
    """Only ``title`` keywords go; a property that happens to be named ``title`` stays."""
    schema = {
        "title": "M",
        "type": "object",
        "properties": {"title": {"title": "T", "type": "string"}},
    }
    assert tidy_schema(schema) == {"type": "object", "properties": {"title": {"type": "string"}}}


def test_string_annotations_are_resolved() -> None:
    """Under ``from __future__ import annotations`` the hints are strings, and still give
    types."""
    assert get_weather.__annotations__["days"] == "int"
    assert Tool.from_function(get_weather).parameters["properties"]["days"]["type"] == "integer"


def test_unresolvable_annotation_is_a_usage_error() -> None:
    """A hint naming a type the function's module cannot see raises, saying where to put it."""

    class Local(BaseModel):
        a: int

    def uses_local(item: Local) -> None:
        """Uses a class defined in a function body."""

    with pytest.raises(LLMUsageError) as info:
        Tool.from_function(uses_local)
    assert str(info.value) == (
        "Tool 'uses_local': a type hint does not resolve (name 'Local' is not defined). Define "
        "the types it names at module level, where the function's module can see them"
    )


def test_star_args_are_a_usage_error() -> None:
    """``**kwargs`` cannot be described to a model."""

    def loose(city: str, **extra: int) -> None:
        """Too loose."""

    with pytest.raises(LLMUsageError) as info:
        Tool.from_function(loose)
    assert str(info.value) == (
        "Tool 'loose': *extra cannot be described to a model; give the function named "
        "parameters instead"
    )


def test_lambda_needs_a_name() -> None:
    """``<lambda>`` is no valid function name; ``name=`` fixes it."""
    with pytest.raises(LLMUsageError) as info:
        Tool.from_function(lambda x: x)
    assert str(info.value) == (
        "'<lambda>' cannot be a tool name: servers accept 1 to 64 letters, digits, '_' and "
        "'-'; pass name=... to tool() or Tool.from_function()"
    )
    assert Tool.from_function(lambda x: x, name="identity").name == "identity"


def test_unannotated_parameter_accepts_anything() -> None:
    """A parameter without a hint has an empty schema (any JSON value)."""

    def echo(value):
        """Echo."""
        return value

    assert Tool.from_function(echo).parameters["properties"] == {"value": {}}


def test_annotated_field_description_wins_over_docstring() -> None:
    """``Annotated[..., Field(description=...)]`` is kept; the docstring fills in the rest."""

    def pick(
        count: Annotated[int, Field(description="From Field.", ge=1)],
        size: int = Field(3, le=10),
    ) -> None:
        """Pick.

        Args:
            count: From the docstring.
            size: Size from the docstring.
        """

    assert Tool.from_function(pick).parameters["properties"] == {
        "count": {"type": "integer", "minimum": 1, "description": "From Field."},
        "size": {
            "type": "integer",
            "maximum": 10,
            "default": 3,
            "description": ("Size from the docstring."),
        },
    }


def test_parameters_named_like_model_attributes_work() -> None:
    """Parameters named ``json``, ``model_config`` or ``copy`` neither warn nor clash."""

    def odd(json: str, model_config: int, copy: bool = False) -> str:
        """Odd names."""
        return f"{json}{model_config}{copy}"

    odd_tool = Tool.from_function(odd)
    assert odd_tool.parameters["required"] == ["json", "model_config"]
    assert odd_tool.validate({"json": "a", "model_config": 2}) == {
        "json": "a",
        "model_config": 2,
        "copy": False,
    }


class Opaque:
    """A plain class: pydantic has no schema for it."""


def test_a_type_without_json_schema_is_a_usage_error() -> None:
    """A parameter of a type pydantic cannot describe raises, naming the tool."""

    def connect(handle: Opaque) -> None:
        """Not a JSON type."""

    with pytest.raises(LLMUsageError) as info:
        Tool.from_function(connect)
    assert info.value.args[0].startswith("Tool 'connect': a parameter's type cannot be validated")


def test_to_schema_returns_a_fresh_copy() -> None:
    """Changing a returned schema does not change the tool."""
    weather = Tool.from_function(get_weather)
    weather.to_schema()["function"]["parameters"]["required"].append("days")
    assert weather.to_schema()["function"]["parameters"]["required"] == ["city"]


# --- the decorator -------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(name="find_user", description="Look a user up by id.")
async def lookup(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "name": "Ada"}


def test_bare_decorator_makes_a_tool_that_is_still_callable() -> None:
    """``@tool`` gives a Tool named after the function, and calling it calls the function."""
    assert isinstance(add, Tool)
    assert (add.name, add.description, add(2, 3)) == ("add", "Add two integers.", 5)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two integers."


async def test_decorator_with_arguments_sets_name_and_description() -> None:
    """``@tool(name=..., description=...)`` overrides both; the async function still awaits."""
    assert (lookup.name, lookup.description, lookup.is_async) == (
        "find_user",
        "Look a user up by id.",
        True,
    )
    assert await lookup(7) == {"id": 7, "name": "Ada"}


def test_signature_of_a_tool_is_the_functions() -> None:
    """inspect sees through a Tool to the function it wraps."""
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int') -> 'int'"


def test_bound_method_becomes_a_tool_without_self() -> None:
    """A bound method's ``self`` is not a parameter the model sees."""

    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def bump(self, by: int) -> int:
            """Bump the counter."""
            self.count += by
            return self.count

    bump = Tool.from_function(Counter().bump)
    assert bump.parameters["properties"] == {"by": {"type": "integer"}}


def forecast(city: str, days: int, api_key: str) -> str:
    """Forecast from a paid service.

    Args:
        city: The city.
        days: Days ahead.
        api_key: The service's key.
    """
    return f"{city} in {days} days (key of {len(api_key)} characters)"


async def test_arguments_bound_by_a_partial_are_hidden_from_the_model() -> None:
    """A ``functools.partial`` keyword (a key, a connection) is neither in the schema nor
    settable by the model, and the bound value is used in the call."""
    bound = Tool.from_function(functools.partial(forecast, api_key="sk-secret-123"))
    assert (bound.name, bound.description) == ("forecast", "Forecast from a paid service.")
    assert "sk-secret-123" not in repr(bound.to_schema())
    assert bound.parameters["properties"] == {
        "city": {"type": "string", "description": "The city."},
        "days": {"type": "integer", "description": "Days ahead."},
    }
    assert await bound.call({"city": "Paris", "days": 2}) == (
        "Paris in 2 days (key of 13 characters)"
    )
    with pytest.raises(pydantic.ValidationError):
        bound.validate({"city": "Paris", "days": 2, "api_key": "other"})


async def test_object_with_async_call_is_an_async_tool() -> None:
    """A callable object is named after its class and awaited if ``__call__`` is async."""

    class Increment:
        """Add one."""

        async def __call__(self, value: int) -> int:
            return value + 1

    increment = Tool.from_function(Increment())
    assert (increment.name, increment.description, increment.is_async) == (
        "Increment",
        "Add one.",
        True,
    )
    assert await increment.call({"value": 41}) == "42"


# --- validation and calling ----------------------------------------------------------------


def test_validate_converts_to_the_parameter_types() -> None:
    """Enum members, models and dataclasses come out built; defaults are filled in."""
    assert Tool.from_function(choose).validate({"color": "green"}) == {
        "color": Color.GREEN,
        "mode": "fast",
        "size": None,
        "note": None,
    }
    assert Tool.from_function(place).validate({"box": {"corner": {"x": 1}}, "points": []}) == {
        "box": Box(corner=Point(x=1, y=0), label="box"),
        "points": [],
        "weights": None,
    }


def test_validate_rejects_missing_wrong_and_unknown_arguments() -> None:
    """Pydantic's errors name each problem by parameter."""
    with pytest.raises(pydantic.ValidationError) as info:
        Tool.from_function(get_weather).validate({"days": "soon", "town": "Paris"})
    assert [(e["type"], e["loc"]) for e in info.value.errors()] == [
        ("missing", ("city",)),
        ("int_parsing", ("days",)),
        ("extra_forbidden", ("town",)),
    ]


def test_validation_errors_read_briefly() -> None:
    """One line per error: where, what, and the input when it was the wrong one."""
    with pytest.raises(pydantic.ValidationError) as info:
        Tool.from_function(get_weather).validate({"days": "soon", "town": "Paris"})
    assert format_validation_errors(info.value.errors()) == (
        "city: Field required\n"
        'days: Input should be a valid integer, unable to parse string as an integer (got "soon")\n'
        "town: Extra inputs are not permitted"
    )


async def test_call_runs_a_sync_function_in_a_worker_thread() -> None:
    """A sync tool does not run on the event loop's thread."""
    threads: list[int] = []

    def where(tag: str) -> str:
        """Record the thread."""
        threads.append(threading.get_ident())
        return tag

    assert await Tool.from_function(where).call({"tag": "t"}) == "t"
    assert threads != [threading.get_ident()]
    assert len(threads) == 1


async def test_call_validates_then_awaits_an_async_function() -> None:
    """An async tool gets validated arguments (``"7"`` becomes 7) and its dict result comes
    back as JSON."""
    assert await lookup.call({"user_id": "7"}) == '{"id":7,"name":"Ada"}'


async def test_call_passes_positional_only_parameters_positionally() -> None:
    """Parameters before ``/`` are passed by position."""

    def scale(value: float, /, factor: float = 2.0) -> float:
        """Scale."""
        return value * factor

    assert await Tool.from_function(scale).call({"value": 1.5, "factor": 3}) == "4.5"


def test_results_become_text() -> None:
    """Strings stay as they are; models, dataclasses, containers and None become JSON; what
    JSON cannot hold falls back to ``str()``."""
    assert to_tool_output("sunny") == "sunny"
    assert to_tool_output(Point(x=1)) == '{"x":1,"y":0}'
    assert to_tool_output(Box(corner=Point(x=1))) == '{"corner":{"x":1,"y":0},"label":"box"}'
    assert to_tool_output([Point(x=2), Color.RED, {1: None}]) == '[{"x":2,"y":0},"red",{"1":null}]'
    assert to_tool_output(None) == "null"
    assert to_tool_output(threading) == str(threading)


async def test_chat_sends_a_tool_as_its_schema() -> None:
    """``chat(tools=[Tool])`` sends exactly ``to_schema()``."""
    async with TestServer(dialect="vllm") as server:
        async with make_client(server.url) as client:
            await client.chat([Message.user("hi")], tools=[add, lookup])
    assert server.chat_requests[0].json["tools"] == [add.to_schema(), lookup.to_schema()]


def test_tool_errors_survive_pickling() -> None:
    """The new errors keep their fields across processes."""
    loop_error = pickle.loads(pickle.dumps(LLMToolLoopError("loop", messages=[Message.user("hi")])))
    assert loop_error.messages == [Message.user("hi")]
    parse_error = pickle.loads(
        pickle.dumps(LLMParseError("bad", raw_text="{", errors=[{"type": "json_invalid"}]))  # type: ignore[list-item]
    )
    assert (parse_error.raw_text, parse_error.errors) == ("{", [{"type": "json_invalid"}])


# --- property: the schema and pydantic agree -----------------------------------------------


def prim(a: int, b: float, c: str, d: bool) -> None:
    """Primitives."""


def lits(mode: Literal["fast", "slow"], level: Literal[1, 2, 3] = 1) -> None:
    """Literals."""


def enums(color: Color, size: Size = Size.SMALL) -> None:
    """Enums."""


def optionals(
    limit: int | None = None,
    name: Optional[str] = None,  # noqa: UP045 -- the typing spelling must work too
    tag: Union[str, int] = 0,  # noqa: UP007
) -> None:
    """Optional values and a union."""


def lists(tags: list[str], scores: list[float] = []) -> None:  # noqa: B006
    """Lists."""


def mapping(counts: dict[str, int]) -> None:
    """A dict."""


def models(point: Point, path: list[Point] = []) -> None:  # noqa: B006
    """A nested model."""


def dataclass_arg(box: Box, boxes: list[Box] | None = None) -> None:
    """A dataclass holding a model."""


def search(
    query: str, page: int = 1, exact: bool = False, order: Literal["asc", "desc"] = "asc"
) -> None:
    """Defaults of every kind."""


def recursive(tree: Node) -> None:
    """A recursive model."""


CORPUS = [prim, lits, enums, optionals, lists, mapping, models, dataclass_arg, search, recursive]


def _fields(cls: type) -> list[tuple[str, Any, bool]]:
    """(name, type, required) of a model's or dataclass's fields."""
    if issubclass(cls, BaseModel):
        return [(n, f.annotation, f.is_required()) for n, f in cls.model_fields.items()]
    hints = get_type_hints(cls)
    return [
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    ]


def _objects(cls: type, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = {}, {}
    for name, annotation, is_required in _fields(cls):
        (required if is_required else optional)[name] = valid_json(annotation, depth + 1)
    return st.fixed_dictionaries(required, optional=optional)


def valid_json(annotation: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """JSON values that a parameter of type ``annotation`` accepts, built from the type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(-(10**9), 10**9)
    if annotation is float:
        return st.floats(-1e9, 1e9) | st.integers(-1000, 1000)
    if annotation is str:
        return st.text(max_size=8)
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from([member.value for member in annotation])
    if origin in (Union, types.UnionType):
        return st.one_of([valid_json(arg, depth) for arg in args])
    if origin is list:
        if depth > 2:
            return st.just([])
        return st.lists(valid_json(args[0], depth + 1), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), valid_json(args[1], depth + 1), max_size=3)
    if isinstance(annotation, type):
        return _objects(annotation, depth)
    raise AssertionError(f"no strategy for {annotation!r}")


def wrong_json(annotation: Any) -> list[Any]:
    """JSON values that both JSON Schema and pydantic's lax mode must refuse for the type
    (no numeric strings, no booleans for numbers: pydantic's lax coercions)."""
    origin, args = get_origin(annotation), get_args(annotation)
    structures: list[Any] = [[1], {"unexpected": 1}]
    if annotation in (int, float):
        return ["abc", None, *structures] + ([1.5] if annotation is int else [])
    if annotation is str:
        return [3, 2.5, True, None, *structures]
    if annotation is bool:
        return ["maybe", 2, 0.5, None, *structures]
    if origin is Literal or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return ["not-one-of-them", 999, None, *structures]
    if annotation is type(None):
        return ["abc", 5, True, *structures]
    if origin in (Union, types.UnionType):
        arms = [arg for arg in args if arg is not type(None)]
        if len(arms) == 1:  # Optional[X]: what X refuses, except null
            return [value for value in wrong_json(arms[0]) if value is not None]
        common = set.intersection(*(set(map(repr, wrong_json(arg))) for arg in arms))
        return [value for value in wrong_json(arms[0]) if repr(value) in common]
    if origin is list:
        return ["abc", 5, {"a": 1}, [wrong_json(args[0])[0]]]
    if origin is dict:
        return ["abc", 5, [1], {"key": wrong_json(args[1])[0]}]
    return ["abc", 5, [1], {}]  # a model or dataclass: all of these lack a required field


def _argument_strategy(fn: Any) -> st.SearchStrategy[dict[str, Any]]:
    required, optional = {}, {}
    for parameter in inspect.signature(fn, eval_str=True).parameters.values():
        target = required if parameter.default is inspect.Parameter.empty else optional
        target[parameter.name] = valid_json(parameter.annotation)
    return st.fixed_dictionaries(required, optional=optional)


CORPUS_TOOLS = {fn: Tool.from_function(fn) for fn in CORPUS}


def _both_accept(fn: Any, arguments: dict[str, Any]) -> tuple[bool, bool]:
    """(the JSON schema accepts, pydantic accepts)."""
    wrapped = CORPUS_TOOLS[fn]
    by_schema = jsonschema.Draft202012Validator(wrapped.parameters).is_valid(arguments)
    try:
        wrapped.validate(arguments)
    except pydantic.ValidationError:
        return by_schema, False
    return by_schema, True


@pytest.mark.parametrize("fn", CORPUS, ids=lambda fn: fn.__name__)
def test_generated_schemas_are_valid_json_schema(fn: Any) -> None:
    """Every schema of the corpus is itself valid JSON Schema (2020-12)."""
    jsonschema.Draft202012Validator.check_schema(Tool.from_function(fn).parameters)


@pytest.mark.parametrize("fn", CORPUS, ids=lambda fn: fn.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_schema_and_pydantic_accept_what_the_function_accepts(fn: Any, data: st.DataObject) -> None:
    """Arguments built from the parameter types pass both the JSON schema and validation."""
    arguments = data.draw(_argument_strategy(fn))
    assert _both_accept(fn, arguments) == (True, True)


@pytest.mark.parametrize("fn", CORPUS, ids=lambda fn: fn.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_schema_and_pydantic_reject_a_wrong_typed_argument(fn: Any, data: st.DataObject) -> None:
    """Valid arguments with one value swapped for a wrong-typed one fail both."""
    arguments = data.draw(_argument_strategy(fn))
    parameters = inspect.signature(fn, eval_str=True).parameters
    name = data.draw(st.sampled_from(sorted(parameters)))
    arguments[name] = data.draw(st.sampled_from(wrong_json(parameters[name].annotation)))
    assert _both_accept(fn, arguments) == (False, False)


@pytest.mark.parametrize("fn", CORPUS, ids=lambda fn: fn.__name__)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_schema_and_pydantic_reject_unknown_or_missing_arguments(
    fn: Any, data: st.DataObject
) -> None:
    """An argument the function does not have, or a required one left out, fails both."""
    arguments = data.draw(_argument_strategy(fn))
    required = [n for n, p in inspect.signature(fn).parameters.items() if p.default is p.empty]
    if required and data.draw(st.booleans()):
        del arguments[data.draw(st.sampled_from(required))]
    else:
        arguments["not_a_parameter"] = 1
    assert _both_accept(fn, arguments) == (False, False)


def test_wrong_values_exist_for_every_parameter_of_the_corpus() -> None:
    """The wrong-value lists the property test draws from hold at least two values."""
    for fn in CORPUS:
        for parameter in inspect.signature(fn, eval_str=True).parameters.values():
            assert len(wrong_json(parameter.annotation)) >= 2, (fn.__name__, parameter.name)
