"""The Responses API shapes (``POST /v1/responses``): OpenAI, Ollama, llama-server, vLLM.

Each server answers a Responses request in its own way; the facts are in
``WIRE-responses.md`` (Ollama v0.33, vLLM 0.34, llama-server at 0c1e57098, OpenAI as recorded
and as openai-python types it). A stream is a list of typed events, each framed as
``event: <type>`` then ``data: <json>``, with no ``[DONE]``; every event is one "chunk" for the
faults that fire after N chunks. What differs:

==================  ==============  ===============  ================  ===================
                    OpenAI          Ollama           llama-server      vLLM
==================  ==============  ===============  ================  ===================
sequence_number     from 0          from 0           absent            from 0
keys                as recorded     sorted (Go map)  as inserted       alphabetical events
reasoning events    summary part    summary text     reasoning_text    reasoning_text with
                    and text                         deltas, no .done  content parts
arguments           fragments       one delta        fragments         fragments
``.done`` events    after each      after each item  all at the end    after each item
                    item            (none for the
                                    message when
                                    tools follow)
cut by length       incomplete      completed        completed         incomplete
error after 200     ``error`` then  stream stops     ``data:`` error,  connection cut
                    ``failed``                       no ``event:``
==================  ==============  ===============  ================  ===================

How the parts fit: `ResponsesShape` (`_responses_base`) holds what they share (the framing,
the ids, the stream in OpenAI's order, the whole answer, the faults); each server's module
(`_responses_openai`, `_responses_ollama`, `_responses_llamacpp`, `_responses_vllm`) builds
its server's objects and overrides the steps that server takes differently. This module
gathers the four shapes for `_dialects`. Pure code, no I/O.
"""

from __future__ import annotations

from llmtap.testing._responses_base import ResponsesShape
from llmtap.testing._responses_llamacpp import LlamaCppResponsesShape
from llmtap.testing._responses_ollama import OllamaResponsesShape
from llmtap.testing._responses_openai import OpenAIResponsesShape
from llmtap.testing._responses_vllm import VllmResponsesShape

__all__ = [
    "LlamaCppResponsesShape",
    "OllamaResponsesShape",
    "OpenAIResponsesShape",
    "ResponsesShape",
    "VllmResponsesShape",
]
