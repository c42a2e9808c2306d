"""A real model served per worker: a scikit-learn classifier trained on the iris data set that
scikit-learn ships, once per worker process before it serves, then shared by every request.

    pip install 'zserve[examples]'
    zserve run zserve.examples.iris:iris -p sepal_length=5.1 -p sepal_width=3.5 \\
        -p petal_length=1.4 -p petal_width=0.2

``iris_batched`` serves the same model with dynamic batching: ``classify_many`` gets the
measurements of up to 32 concurrent requests as lists and predicts them in one call.

``load_iris_model`` is the factory: ``Resource(load_iris_model)`` on the step's ``model``
parameter asks the engine for its value, which is never a request field. A factory that needs a
teardown yields its value instead of returning it (the code after ``yield`` runs at shutdown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zserve import Resource, pipeline, step


@dataclass(frozen=True)
class IrisModel:
    """The fitted estimator and the names of the classes it predicts."""

    estimator: Any
    species: list[str]


def load_iris_model() -> IrisModel:
    """Train a logistic regression on the iris data set (150 flowers, 4 measurements in cm)."""
    try:
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise RuntimeError(
            "this example needs scikit-learn: pip install 'zserve[examples]'"
        ) from None
    data = load_iris()
    estimator = LogisticRegression(max_iter=1000).fit(data.data, data.target)
    return IrisModel(estimator, [str(name) for name in data.target_names])


@step
def classify(
    sepal_length: float,
    sepal_width: float,
    petal_length: float,
    petal_width: float,
    model: IrisModel = Resource(load_iris_model),
) -> dict[str, Any]:
    """The predicted species of one flower, and the probability of each species."""
    row = [[sepal_length, sepal_width, petal_length, petal_width]]
    return _answer(model, model.estimator.predict_proba(row)[0])


@step(batch=32, batch_wait_ms=2)
def classify_many(
    sepal_length: list[float],
    sepal_width: list[float],
    petal_length: list[float],
    petal_width: list[float],
    model: IrisModel = Resource(load_iris_model),
) -> list[dict[str, Any]]:
    """The same, for the flowers of up to 32 concurrent requests in one call of the model."""
    rows = [list(row) for row in zip(sepal_length, sepal_width, petal_length, petal_width,
                                     strict=True)]  # fmt: skip
    return [_answer(model, p) for p in model.estimator.predict_proba(rows)]


def _answer(model: IrisModel, probabilities: Any) -> dict[str, Any]:
    best = int(probabilities.argmax())
    return {
        "species": model.species[best],
        "probabilities": {
            name: round(float(p), 4) for name, p in zip(model.species, probabilities, strict=True)
        },
    }


@pipeline(settings={"capture": "none"})
def iris(
    sepal_length: float, sepal_width: float, petal_length: float, petal_width: float
) -> dict[str, Any]:
    return classify(sepal_length, sepal_width, petal_length, petal_width)


@pipeline(settings={"capture": "none"})
def iris_batched(
    sepal_length: float, sepal_width: float, petal_length: float, petal_width: float
) -> dict[str, Any]:
    """``iris`` with dynamic batching: concurrent requests share calls of the model."""
    return classify_many(sepal_length, sepal_width, petal_length, petal_width)
