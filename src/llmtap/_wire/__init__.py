"""The wire, without I/O: what llmtap sends and what the servers' answers mean.

Bytes in, meaning out, and requests out: line splitting (``lines``), Server-Sent Events
(``sse``), newline-delimited JSON (``ndjson``), a streamed answer as chunk dicts with its end
told apart from a cut (``chunks``), chunks accumulated into typed events and one result
(``accumulate``), request payloads per dialect and error bodies (``dialects``), one chat
request as sent and the changes a server's refusal calls for (``request``), and model
listings (``listings``).

Nothing here imports asyncio or aiohttp (a test checks it): every piece is fed by the HTTP
layer above and is tested on its own, byte boundaries and all.
"""
