"""Try it: a form made from the pipeline's parameter schema invokes it sync (the outputs, or the
server's problem) and async (the job's page follows)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import Serve, ServerProcess
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"
TRACKED = "tests.server.tracked:tracked"


def test_invoke_from_the_form_and_see_the_output(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(WEATHER)
    board = ui(server)
    page = board.open("/try")
    page.wait_for_selector("form.try-form input[name=city]")
    # the schema's default is filled in; `city` is required
    assert page.input_value("input[name=days]") == "1"
    assert "*" in page.inner_text("label:has(input[name=city])")
    board.shot("try-form")
    page.fill("input[name=city]", "Lisbon")
    page.fill("input[name=days]", "3")
    page.click("button[name=sync]")
    output = page.wait_for_selector(".try-outputs")
    text = output.inner_text()
    assert "Lisbon" in text, text
    board.shot("try-output")


def test_a_validation_error_shows_the_problems_detail(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(WEATHER)
    board = ui(server)
    page = board.open("/try")
    page.wait_for_selector("input[name=city]")
    page.fill("input[name=city]", "Oslo")
    page.fill("input[name=days]", "1.5")  # not an integer: the server refuses it
    page.click("button[name=sync]")
    detail = page.wait_for_selector(".try-problem .try-detail").inner_text()
    assert "Invalid parameters" in detail and "days" in detail, detail
    assert "Input should be a valid integer" in page.inner_text(".try-problem")
    board.shot("try-invalid")
    board.errors[:] = [e for e in board.errors if "422" not in e]  # the refused request


def test_async_invoke_goes_to_the_jobs_page(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(TRACKED)
    board = ui(server)
    page = board.open("/try")
    # booleans are checkboxes, integers numbers, with their defaults
    page.wait_for_selector("input[name=fail][type=checkbox]")
    assert page.input_value("input[name=size]") == "0"
    page.fill("input[name=city]", "Rome")
    page.click("button[name=async]")
    page.wait_for_url("**/ui#/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    with server.client() as client:
        doc = client.get(f"/jobs/{job_id}").json()
    assert doc["mode"] == "async"
    page.wait_for_selector("main h1")
    board.shot("try-async-job")


FORMS = "tests.ui.forms:form_pipeline"


def test_every_kind_of_parameter_gets_its_field(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(FORMS)
    board = ui(server)
    page = board.open("/try")
    page.wait_for_selector("input[name=name]")
    # an enum is a select, a boolean a checkbox, a list a JSON textarea with its default
    assert page.locator("select[name=unit] option").all_inner_texts() == [
        "(default)",
        "celsius",
        "fahrenheit",
    ]
    assert page.locator("input[name=loud][type=checkbox]").count() == 1
    assert page.input_value("input[name=ratio]") == "0.5"
    assert page.input_value("input[name=limit]") == ""
    assert '"a"' in page.input_value("textarea[name=tags]")
    board.shot("try-form-kinds")
    # JSON that does not parse is refused before anything is sent
    page.fill("input[name=name]", "ada")
    page.fill("textarea[name=tags]", "[oops")
    page.click("button[name=sync]")
    assert "tags: not valid JSON" in page.wait_for_selector(".try-problem").inner_text()
    page.select_option("select[name=unit]", label="fahrenheit")
    page.fill("input[name=ratio]", "2.5")
    page.fill("input[name=limit]", "7")
    page.check("input[name=loud]")
    page.fill("textarea[name=tags]", '["x", "y"]')
    page.click("button[name=sync]")
    text = page.wait_for_selector(".try-outputs").inner_text()
    assert "ADA IN FAHRENHEIT X2.5 LIMIT=7 TAGS=X,Y" in text, text
    # an empty optional field is sent as null
    page.fill("input[name=limit]", "")
    page.uncheck("input[name=loud]")
    page.click("button[name=sync]")
    page.wait_for_selector(".try-outputs >> text=limit=None")
    assert '"limit": null' in page.inner_text(".try-outputs")
    board.shot("try-form-kinds-output")
