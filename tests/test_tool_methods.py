"""``@tool`` on methods: ``Tool`` is a descriptor that binds the instance (issue 21, item 2)."""

from __future__ import annotations

import pytest

from llmtap import LLMUsageError, Message, Tool, tool
from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.conftest import make_client


class Counter:
    """A service whose methods are tools."""

    def __init__(self, start: int) -> None:
        self.start = start

    @tool
    def count(self, step: int) -> int:
        """Count on from the service's start.

        Args:
            step: How far to count.
        """
        return self.start + step

    @tool(name="count_later")
    async def count_async(self, step: int = 1) -> int:
        """Count on, asynchronously."""
        return self.start + step


def test_a_method_tool_has_no_self_in_its_schema() -> None:
    """The schema the model sees lists the method's own parameters, not ``self``."""
    assert Counter(10).count.to_schema() == {
        "type": "function",
        "function": {
            "name": "count",
            "description": "Count on from the service's start.",
            "parameters": {
                "type": "object",
                "properties": {"step": {"type": "integer", "description": "How far to count."}},
                "required": ["step"],
                "additionalProperties": False,
            },
        },
    }


def test_the_class_attribute_has_the_same_schema() -> None:
    """Counter.count (unbound) describes the same parameters as an instance's."""
    assert Counter.count.parameters == Counter(1).count.parameters


def test_a_method_tool_on_an_instance_is_a_bound_tool() -> None:
    """svc.count is a Tool, and calling it passes the instance as ``self``."""
    bound = Counter(10).count
    assert (isinstance(bound, Tool), bound(2), bound(step=5)) == (True, 12, 15)


def test_each_instance_binds_its_own() -> None:
    """Two instances give two tools bound to themselves."""
    assert (Counter(1).count(1), Counter(100).count(1)) == (2, 101)


def test_the_unbound_method_is_called_like_a_function() -> None:
    """Counter.count(svc, 2) works as the plain method would."""
    assert Counter.count(Counter(3), 2) == 5


async def test_a_bound_tool_validates_and_calls() -> None:
    """Tool.call on a bound method tool validates the model's arguments and runs it."""
    assert await Counter(40).count.call({"step": 2}) == "42"


async def test_a_bound_async_method_tool_is_awaited() -> None:
    """An async method tool is awaited on the loop, with its default filled in."""
    service = Counter(7)
    assert (service.count_async.is_async, await service.count_async.call({})) == (True, "8")


async def test_run_tools_runs_a_bound_method_tool() -> None:
    """run_tools calls the method on its instance, and the model gets its result."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(tool_calls=[ToolCallSpec("count", {"step": 2})]), Reply(text="It is 12.")
        )
        async with make_client(server.url) as client:
            run = await client.run_tools([Message.user("Count 2 on.")], [Counter(10).count])
        sent_tools = server.chat_requests[0].json["tools"]
    asked = run.messages[1]
    assert isinstance(asked, Message)
    assert asked.tool_calls is not None
    assert run.messages[2] == Message.tool("12", tool_call_id=asked.tool_calls[0].id, name="count")
    assert sent_tools[0]["function"]["parameters"]["required"] == ["step"]


async def test_run_tools_refuses_the_unbound_method() -> None:
    """Counter.count has no instance to run on: run_tools says to take it from one."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMUsageError) as info:
                await client.run_tools([Message.user("Count.")], [Counter.count])
        assert server.chat_requests == []
    assert str(info.value) == (
        "tool 'count' is a method of Counter, taken from the class: it has no instance to run "
        "on; pass it from an instance (counter.count, for counter = Counter(...))"
    )


def test_a_module_level_tool_set_as_a_class_attribute_stays_a_function() -> None:
    """A tool made elsewhere and put on a class is not turned into a method."""

    @tool
    def double(n: int) -> int:
        """Twice n."""
        return 2 * n

    class Holder:
        helper = double

    assert (Holder().helper(4), Holder.helper is double, double(3)) == (8, True, 6)
    assert double.parameters["required"] == ["n"]


def test_tool_on_a_staticmethod_is_refused() -> None:
    """@tool over @staticmethod is refused, with the two ways that work."""
    with pytest.raises(LLMUsageError) as info:

        class Service:
            @tool  # type: ignore[misc]
            @staticmethod
            def add(a: int, b: int) -> int:
                return a + b

    assert str(info.value) == (
        "@tool cannot wrap a staticmethod: put @staticmethod above @tool, or define the "
        "function at module level"
    )


def test_tool_on_a_classmethod_is_refused() -> None:
    """@tool over @classmethod is refused: a tool is a function or a method."""
    with pytest.raises(LLMUsageError) as info:

        class Service:
            @tool  # type: ignore[arg-type]
            @classmethod
            def make(cls, a: int) -> int:
                return a

    assert str(info.value) == (
        "@tool cannot wrap a classmethod: make it a plain method (bound to an instance) or a "
        "module-level function"
    )


def test_staticmethod_above_tool_gives_a_plain_tool() -> None:
    """@staticmethod over @tool: the tool has every parameter and works from the class or an
    instance."""

    class Service:
        @staticmethod
        @tool
        def add(a: int, b: int) -> int:
            """The sum."""
            return a + b

    assert (Service.add(1, 2), Service().add(3, 4)) == (3, 7)
    assert isinstance(Service.add, Tool)
    assert Service.add.parameters["required"] == ["a", "b"]
