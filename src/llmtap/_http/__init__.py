"""HTTP: the only part of llmtap that imports aiohttp (a test checks it).

``session`` holds an endpoint's connections and sends requests (with the deadline for the
headers and the resend over a connection the server had closed); ``exchange`` reads one
answer's body under its deadlines, on one read loop for every streamed body; ``status`` names
every failure (the one status-to-error mapping, and low-level exceptions to llmtap's errors);
``internals`` holds every access to aiohttp's private internals, each checked at import with a
public fallback. Imported on first use, not with ``llmtap``.
"""

from llmtap._http.exchange import Exchange
from llmtap._http.session import Session
from llmtap._http.status import request_id_of, response_error, timeout_error

__all__ = ["Exchange", "Session", "request_id_of", "response_error", "timeout_error"]
