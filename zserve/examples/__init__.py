"""Pipelines that ship with zserve: weather, multi_output, fanout, failing, slow, streaming."""
