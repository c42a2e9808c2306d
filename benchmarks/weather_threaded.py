"""The weather pipeline with the spec's plain ``@step``: each sync step may block, so the chain
runs in a worker thread (one hop per request). Benchmarked beside zserve.examples.weather, whose
steps say ``blocking=False`` and stay on the event loop."""

from __future__ import annotations

from zserve import pipeline, step
from zserve.examples import weather

fetch_data = step(weather.fetch_data.fn)
analyze_data = step(weather.analyze_data.fn)


@pipeline(settings={"capture": "none"})
def weather_pipeline(city: str, days: int = 1) -> str:
    data = fetch_data(city)
    return analyze_data(data, days)
