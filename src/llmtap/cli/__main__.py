"""``python -m llmtap.cli``: the ``llmtap`` command."""

from llmtap.cli._app import main

main()
