"""The pydantic models that validate a request to a pipeline: ``InvokeRequest`` (the body of
``POST /invoke``), subclassed per plan with its own ``parameters`` model so that one pass of
pydantic-core validates a whole request, and the errors that name what is wrong in one."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from zserve.errors import InvalidParameters, PipelineDefinitionError, UsageError, describe_fields
from zserve.records import CaptureMode
from zserve.sdk.pipeline import Pipeline

__all__ = ["PARAMETERS_CONFIG", "CaptureOverride", "InvokeRequest", "build_models", "request_error"]


class CaptureOverride(BaseModel):
    # the schema says what the validator below checks: sample_rate goes with mode sampled only
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "if": {"properties": {"mode": {"not": {"const": "sampled"}}}},
            "then": {"properties": {"sample_rate": {"type": "null"}}},
        },
    )

    mode: CaptureMode
    sample_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _rate_for_sampled(self) -> CaptureOverride:
        if self.sample_rate is not None and self.mode != "sampled":
            raise ValueError(f"sample_rate applies to mode 'sampled' only, not {self.mode!r}")
        return self


class InvokeRequest(BaseModel):
    """The body of ``POST /invoke``. Each plan subclasses it with its own ``parameters``
    model, so one pass of pydantic-core validates the whole request."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    parameters: BaseModel
    capture_override: CaptureOverride | None = None
    timeout_s: float | None = Field(default=None, gt=0)


def request_error(exc: ValidationError) -> UsageError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return UsageError(
            "The request body is not valid JSON: send an object such as "
            '{"parameters": {...}} with Content-Type: application/json'
        )
    if any(e["type"] in ("model_type", "model_attributes_type") and not e["loc"] for e in errors):
        return UsageError('The request body must be a JSON object: {"parameters": {...}}')
    invalid = InvalidParameters.from_field_errors(errors)
    fields = {str(e["loc"][0]) for e in invalid.errors if e["loc"]}
    if "parameters" not in fields and len(fields) == 1:  # capture_override, timeout_s...
        return InvalidParameters(
            invalid.errors, f"Invalid {fields.pop()}: " + describe_fields(invalid.errors)
        )
    return invalid


#: Parameters are validated as the published schema says: no "3" or true for an int, no 3.0 for
#: an int, no NaN or infinities. ``Annotated[int, Field(strict=False)]`` relaxes one parameter.
PARAMETERS_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def build_models(pipe: Pipeline) -> tuple[type[BaseModel], type[InvokeRequest], dict[str, Any]]:
    hints = pipe.annotations(extras=True)  # Field(...) constraints and settings count
    fields: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    request_parameters = pipe.request_parameters
    for name, param in request_parameters.items():
        annotation = hints.get(name, Any)
        _check_parameter(pipe.name, name, annotation)
        if param.default is inspect.Parameter.empty:
            fields[name] = (annotation, ...)
        else:
            fields[name] = (annotation, param.default)
            defaults[name] = param.default
    model_name = "".join(p.title() for p in pipe.name.split("_")) + "Parameters"
    params_model: type[BaseModel] = create_model(model_name, __config__=PARAMETERS_CONFIG, **fields)
    required = any(p.default is inspect.Parameter.empty for p in request_parameters.values())
    parameters_field: Any = (
        (params_model, ...) if required else (params_model, Field(default_factory=params_model))
    )
    request_model = create_model(
        "InvokeRequest", __base__=InvokeRequest, parameters=parameters_field
    )
    return params_model, request_model, defaults


def _check_parameter(pipeline: str, name: str, annotation: Any) -> None:
    """A parameter must be a request field: a plain name and a type pydantic reads from JSON."""
    if name.startswith(("_", "model_")):
        raise PipelineDefinitionError(
            f"pipeline '{pipeline}': parameter '{name}' cannot be a request field (names "
            "starting with '_' or 'model_' are reserved by pydantic); rename it"
        )
    try:
        TypeAdapter(annotation).json_schema()
    except Exception as exc:
        kind = getattr(annotation, "__name__", repr(annotation))
        raise PipelineDefinitionError(
            f"pipeline '{pipeline}': parameter '{name}' has type {kind}, which cannot be read "
            "from a JSON request; use JSON-friendly types (str, int, float, bool, list, dict, "
            f"pydantic models, dataclasses) ({type(exc).__name__})"
        ) from None
