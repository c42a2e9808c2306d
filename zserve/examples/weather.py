"""The spec's weather pipeline: two steps, the first one's output injected into the second."""

from typing import Any

from zserve import pipeline, step


@step(blocking=False)
def fetch_data(city: str) -> dict[str, Any]:
    return {"city": city, "weather": "sunny", "temp": 25}


@step(blocking=False)
def analyze_data(weather_data: dict[str, Any], days: int = 1) -> str:
    return f"Analysis for {weather_data['city']} over {days} day(s): {weather_data}"


@pipeline(settings={"capture": "none"})
def weather_pipeline(city: str, days: int = 1) -> str:
    data = fetch_data(city)
    return analyze_data(data, days)  # the upstream output is injected in memory
