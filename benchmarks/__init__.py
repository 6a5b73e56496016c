"""Side-by-side benchmarks of llmtap and other Python LLM clients (not tests; not collected).

Run ``python -m benchmarks`` (``--quick`` for a one-minute pass, ``--json FILE`` to keep the
figures, ``--only SCENARIO`` for one scenario). The streaming server runs in its own process
(:mod:`benchmarks.server`); client CPU is measured in this process with ``time.process_time()``.
"""
