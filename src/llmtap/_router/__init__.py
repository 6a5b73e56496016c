"""``Router``: many LLM servers as one client.

``router`` is the public face (construction, the calls, and the route the attempt loop takes
through the pool); ``pool`` holds the endpoints' health, listings and free slots and picks
one per attempt; ``endpoint`` is what is known of one endpoint, and the retry budget.
"""

from llmtap._router.endpoint import EndpointStats
from llmtap._router.router import Router

__all__ = ["EndpointStats", "Router"]
