"""Execution: compiled plan, run context (ContextVar), runner, observers, capture, deployments.
May import zserve.sdk, the bottom modules (errors, events, records, settings) and pydantic; never
jobs, broker, store, server, cli or their frameworks (docs/architecture.md, Layers)."""
