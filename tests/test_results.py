"""``trusted()``: the cheap constructor for result models must give what model_construct gives."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from llmtap import ChatResult, Message, Timings, ToolCall, Usage
from llmtap._results import trusted

CALL = ToolCall(id="call_1", name="f", arguments={"x": 1})
USAGE = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
TIMINGS = Timings(time_to_first_token=0.1, total=0.5)


def same(a: BaseModel, b: BaseModel) -> None:
    assert type(a) is type(b)
    assert a == b
    assert a.__dict__ == b.__dict__
    assert list(a.__dict__) == list(b.__dict__)  # field order, for repr and iteration
    assert a.model_fields_set == b.model_fields_set
    assert repr(a) == repr(b)
    assert a.model_dump() == b.model_dump()
    assert a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True)
    assert a.model_dump_json() == b.model_dump_json()
    assert a.__pydantic_extra__ == b.__pydantic_extra__
    assert a.__pydantic_private__ == b.__pydantic_private__


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (Usage, {"prompt_tokens": 3, "completion_tokens": None, "total_tokens": 3}),
        (Usage, {}),
        (Timings, {"time_to_first_token": None, "total": 1.5, "tokens_per_second": 2.0,
                   "load_duration": None}),
        (Message, {"role": "assistant", "content": "hi", "tool_calls": None}),
        (Message, {"role": "assistant", "content": None, "tool_calls": (CALL,)}),
        (ChatResult, {"message": Message(role="assistant", content="hi"), "text": "hi"}),
        (
            ChatResult,
            {
                "message": Message(role="assistant", content=None, tool_calls=(CALL,)),
                "text": "", "reasoning": "hm", "tool_calls": (CALL,),
                "finish_reason": "tool_calls", "usage": USAGE, "timings": TIMINGS,
                "model": "m", "server": "vllm", "warnings": ("w",),
            },
        ),
    ],
)  # fmt: skip
def test_trusted_is_model_construct(cls: type[BaseModel], values: dict[str, Any]) -> None:
    same(trusted(cls, **values), cls.model_construct(**values))


def test_trusted_results_stay_frozen() -> None:
    result = trusted(ChatResult, message=Message(role="assistant", content="x"), text="x")
    with pytest.raises(ValueError, match="frozen"):
        result.text = "y"  # type: ignore[misc]


class Aliased(BaseModel):
    value: int = Field(alias="v")
    items: list[int] = Field(default_factory=list)


def test_a_model_with_aliases_or_factories_goes_to_model_construct() -> None:
    same(trusted(Aliased, v=3), Aliased.model_construct(v=3))
    assert trusted(Aliased, v=3).items == []
