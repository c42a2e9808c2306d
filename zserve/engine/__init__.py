"""Execution: compiled plan, run context (ContextVar), runner.
May import zserve.sdk, errors, settings, events and pydantic; never server, cli, store or
their frameworks."""
