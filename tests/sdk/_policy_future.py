"""Steps for tests/sdk/test_capture_policies.py, in a ``from __future__ import annotations``
module whose annotations name a class defined only after the steps that use it."""

from __future__ import annotations

from typing import Annotated

from zserve import Capture, pipeline, step


@step
def load(doc_id: str, token: Annotated[str, Capture("none")]) -> Annotated[Doc, Capture("full")]:
    return Doc(doc_id)


@step
def title(doc: Doc) -> str:
    return doc.doc_id.upper()


@pipeline
def future_docs(doc_id: Annotated[str, Capture("metadata")], token: str) -> str:
    return title(load(doc_id, token))


class Doc:  # defined after the steps and the pipeline that name it
    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
