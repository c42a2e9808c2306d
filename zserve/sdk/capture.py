"""Capture policies as authors write them: ``Capture`` in a signature, and the ``settings`` of
``@step`` and ``@pipeline``; the policy types the engine compiles them into (``ValuePolicy``,
``StepPolicy``, built by ``zserve.engine.policies``).

A step's settings (checked when it is decorated)::

    @step(settings={
        "capture": "none",                    # the step's mode
        "artifacts": "errors_only",           # whether its values are stored as artifacts
        "inputs": {"token": "none",           # one input: a mode,
                   "doc": {"mode": "full", "artifacts": "sampled"}},  # or mode and artifacts
        "outputs": "metadata",                # its output as a whole, the same two forms
        "redact": ["ssn", "iban"],            # key words whose values are stored as [REDACTED]
    })

The same for one value, in the signature: ``api_key: Annotated[str, Capture("none")]`` or
``-> Annotated[dict, Capture("full", artifacts="errors_only")]``. When a settings entry and an
annotation name the same value, the settings entry wins, except that ``none`` from either wins.

A redaction pattern is one word of a key, matched case-insensitively against the words a key is
split into (at ``_``, ``-``, ``.``, spaces and camelCase humps): ``ssn`` redacts ``user_ssn``
and ``userSsn`` (``zserve.engine.redact``).
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zserve.errors import PipelineDefinitionError
from zserve.records import CAPTURE_MODES
from zserve.sdk.resources import resource_default

__all__ = [
    "ARTIFACT_MODES",
    "Capture",
    "StepPolicy",
    "ValuePolicy",
    "capture_in",
    "check_redact",
    "check_step_settings",
    "check_value_setting",
    "type_hints",
]

#: Whether a value is stored as an artifact: never, when its run fails, when its run is
#: sampled, always. Unset, it follows the value's mode.
ARTIFACT_MODES: tuple[str, ...] = ("none", "errors_only", "sampled", "full")

STEP_SETTINGS = ("artifacts", "capture", "inputs", "outputs", "redact")

_WORD = re.compile(r"[A-Za-z]+|[0-9]+")


def _check_mode(mode: object, where: str) -> str:
    if not isinstance(mode, str) or mode not in CAPTURE_MODES:
        raise PipelineDefinitionError(
            f"{where}: unknown capture mode {mode!r}; use one of {', '.join(CAPTURE_MODES)}"
        )
    return mode


def _check_artifacts(artifacts: object, where: str) -> str | None:
    if artifacts is not None and (
        not isinstance(artifacts, str) or artifacts not in ARTIFACT_MODES
    ):
        raise PipelineDefinitionError(
            f"{where}: unknown artifacts setting {artifacts!r}; use one of "
            f"{', '.join(ARTIFACT_MODES)}"
        )
    return artifacts


@dataclass(frozen=True)
class Capture:
    """The capture policy of one value, in a signature: ``Annotated[str, Capture("none")]``.

    ``mode`` is a capture mode (``none`` is a privacy floor: the value is never stored);
    ``artifacts`` whether the value is stored as an artifact (none, errors_only, sampled,
    full), following the mode when unset.
    """

    mode: str
    artifacts: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _check_mode(self.mode, "Capture")
        _check_artifacts(self.artifacts, "Capture")


@dataclass(frozen=True)
class ValuePolicy:
    """The policy of one value (a step input, or a step's output): None where unset."""

    mode: str | None = None
    artifacts: str | None = None


@dataclass(frozen=True)
class StepPolicy:
    """The compiled policy of one step: its own mode and artifacts, its inputs' and its
    output's policies (settings over annotations, ``none`` from either winning), and its
    redaction patterns. None or empty where unset."""

    mode: str | None = None
    artifacts: str | None = None
    inputs: dict[str, ValuePolicy] = field(default_factory=dict)
    output: ValuePolicy | None = None
    redact: tuple[str, ...] | None = None


def check_value_setting(value: object, where: str) -> ValuePolicy:
    """One ``inputs`` entry or the ``outputs`` setting: a mode, ``{"mode": ..., "artifacts":
    ...}`` (either key may be left out, not both) or a ``Capture``."""
    if isinstance(value, Capture):
        return ValuePolicy(value.mode, value.artifacts)
    if isinstance(value, str):
        return ValuePolicy(_check_mode(value, where))
    if isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in ("mode", "artifacts"))
        if unknown or not value:
            raise PipelineDefinitionError(
                f"{where}: {f'unknown key(s) {unknown}' if unknown else 'an empty policy'}; "
                'write a mode such as "none", or {"mode": ..., "artifacts": ...}'
            )
        mode = value.get("mode")
        return ValuePolicy(
            None if mode is None else _check_mode(mode, where),
            _check_artifacts(value.get("artifacts"), where),
        )
    raise PipelineDefinitionError(
        f'{where}: {value!r} is not a policy; write a mode such as "none", '
        '{"mode": ..., "artifacts": ...} or Capture(...)'
    )


def check_redact(value: object, where: str) -> tuple[str, ...]:
    """A list of redaction patterns: each one word of a key (letters, or digits)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise PipelineDefinitionError(
            f'{where}: \'redact\' must be a list of key words, such as ["ssn", "iban"], '
            f"not {value!r}"
        )
    for pattern in value:
        if not isinstance(pattern, str) or not _WORD.fullmatch(pattern):
            raise PipelineDefinitionError(
                f"{where}: redaction pattern {pattern!r} is not one word; keys are split into "
                "words at '_', '-', '.', spaces and camelCase, and a pattern matches one of "
                "them: write 'ssn' to redact 'user_ssn'"
            )
    return tuple(value)


def check_step_settings(name: str, signature: inspect.Signature, settings: object) -> None:
    """Refuse an unknown key, mode or artifacts setting, a malformed policy, and an ``inputs``
    entry that names no parameter of the step."""
    where = f"step '{name}'"
    if not isinstance(settings, Mapping):
        raise PipelineDefinitionError(
            f'{where}: settings must be a dict such as {{"capture": "none"}}, not {settings!r}'
        )
    unknown = sorted(str(k) for k in settings if k not in STEP_SETTINGS)
    if unknown:
        raise PipelineDefinitionError(
            f"{where}: unknown setting(s) {unknown}; known: {list(STEP_SETTINGS)}"
        )
    if settings.get("capture") is not None:
        _check_mode(settings["capture"], f"{where}, setting 'capture'")
    _check_artifacts(settings.get("artifacts"), f"{where}, setting 'artifacts'")
    if settings.get("redact") is not None:
        check_redact(settings["redact"], where)
    if settings.get("outputs") is not None:
        check_value_setting(settings["outputs"], f"{where}, setting 'outputs'")
    inputs = settings.get("inputs")
    if inputs is None:
        return
    if not isinstance(inputs, Mapping):
        raise PipelineDefinitionError(
            f"{where}: setting 'inputs' must map parameter names to policies, such as "
            f'{{"token": "none"}}, not {inputs!r}'
        )
    params = list(signature.parameters)
    for key, value in inputs.items():
        if key not in params:
            raise PipelineDefinitionError(
                f"{where}: setting 'inputs' names {key!r}, which is not a parameter of the "
                f"step; use one of {params}"
            )
        if resource_default(signature.parameters[key]) is not None:
            raise PipelineDefinitionError(
                f"{where}: setting 'inputs' names {key!r}, a resource: a resource is never "
                "captured, so it takes no capture setting"
            )
        check_value_setting(value, f"{where}, input '{key}'")


def capture_in(annotation: Any) -> Capture | None:
    """The ``Capture`` in an annotation's ``Annotated`` metadata, also in the members of a
    union (``Annotated[str, Capture("none")] | None``). Several: ``none`` wins, else the
    outermost."""
    found: list[Capture] = []
    _collect(annotation, found)
    if not found:
        return None
    return next((c for c in found if c.mode == "none"), found[0])


def _collect(annotation: Any, found: list[Capture]) -> None:
    if typing.get_origin(annotation) is typing.Annotated:
        found.extend(m for m in reversed(annotation.__metadata__) if isinstance(m, Capture))
        _collect(typing.get_args(annotation)[0], found)
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            _collect(member, found)


def type_hints(fn: Callable[..., Any], *, extras: bool = True) -> dict[str, Any]:
    """A function's annotations, evaluated (``from __future__ import annotations`` included),
    with their ``Annotated`` metadata when ``extras``. An annotation that cannot be evaluated
    (a forward reference to a name not defined yet) is left as written; but one that mentions
    ``Capture`` is an error, so that a policy is never dropped in silence."""
    try:
        return typing.get_type_hints(fn, include_extras=extras)
    except Exception:
        pass
    raw: dict[str, Any] = dict(getattr(fn, "__annotations__", {}))
    scope = getattr(inspect.unwrap(fn), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():

        def one() -> None: ...

        one.__annotations__ = {name: annotation}
        try:
            hints[name] = typing.get_type_hints(one, globalns=scope, include_extras=extras)[name]
        except Exception as exc:
            if isinstance(annotation, str) and "Capture" in annotation:
                fn_name = getattr(fn, "__qualname__", repr(fn))
                raise PipelineDefinitionError(
                    f"'{fn_name}': the annotation of '{name}' ({annotation}) names a Capture "
                    f"policy but cannot be evaluated ({type(exc).__name__}: {exc}); define "
                    "the names it uses at module level"
                ) from None
            hints[name] = annotation
    return hints
