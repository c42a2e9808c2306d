"""The dashboard's Jobs pages in a real browser: the live list (filtered by status, paged), a
job page that follows the job's events over SSE (steps lighting up, chunks, progress, outputs),
Cancel, a dropped connection resumed without gap nor duplicate, and streams with a token (never
the key in a URL) when the server has an auth key."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Serve, ServerProcess
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api").expect

STREAMING = "zserve.examples.streaming:streaming_pipeline"


def submit(server: ServerProcess, key: str | None = None, **parameters: Any) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(
        f"{server.url}/invoke?mode=async",
        json={"parameters": parameters},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def wait_status(
    server: ServerProcess, job_id: str, statuses: set[str], key: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{server.url}/jobs/{job_id}", headers=headers).json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}")


def chunks(page: Any) -> list[tuple[int, str]]:
    """Every chunk the page shows: (seq, text), in page order."""
    found: list[list[Any]] = page.eval_on_selector_all(
        ".chunk", "els => els.map(e => [Number(e.dataset.seq), e.textContent])"
    )
    return [(seq, text) for seq, text in found]


def wait_chunks(page: Any, count: int) -> None:
    """Until the page shows at least ``count`` chunks."""
    page.wait_for_selector(f".chunks .chunk:nth-of-type({count})")


def assert_once_in_order(shown: list[tuple[int, str]], words: int) -> None:
    seqs = [seq for seq, _ in shown]
    assert seqs == sorted(set(seqs)), f"a chunk shown twice or out of order: {seqs}"
    assert [text for _, text in shown] == [f"word-{i}" for i in range(words)]
    assert seqs == list(range(seqs[0], seqs[0] + words)), f"a gap: {seqs}"


def test_the_list_shows_jobs_filters_by_status_and_pages(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(STREAMING)
    done = [submit(server, words=1, delay=0) for _ in range(20)]
    for job_id in done:
        wait_status(server, job_id, {"completed"})
    slow = submit(server, words=200, delay=0.1)
    wait_status(server, slow, {"running"})
    board = ui(server)
    page = board.open("/jobs")
    page.wait_for_selector(f"tr[data-job='{slow}'] .status-running")
    assert page.locator("tr.job-row").count() == 20  # a page of 20, newest first
    assert page.locator("tr.job-row").first.get_attribute("data-job") == slow
    board.shot("jobs-list")
    # the next page, with the `next` cursor: the oldest job
    page.click("button.older")
    page.wait_for_selector(f"tr[data-job='{done[0]}']")
    assert page.locator("tr.job-row").count() == 1
    board.shot("jobs-list-older")
    page.click("button.newest")
    page.wait_for_selector(f"tr[data-job='{slow}']")
    # filtered by status
    page.select_option("select[name=status]", "running")
    expect(page.locator("tr.job-row")).to_have_count(1)
    assert page.locator("tr.job-row").get_attribute("data-job") == slow
    board.shot("jobs-list-running")
    page.select_option("select[name=status]", "completed")
    page.wait_for_selector(f"tr[data-job='{done[-1]}']")
    assert page.locator(f"tr[data-job='{slow}']").count() == 0
    page.select_option("select[name=status]", "cancelled")
    page.wait_for_selector(".jobs-empty")
    # live: the list refreshes by itself
    httpx.post(f"{server.url}/jobs/{slow}/cancel")
    page.wait_for_selector(f"tr[data-job='{slow}'] .status-cancelled")
    board.shot("jobs-list-cancelled")
    # each row links to its job's page
    page.click(f"tr[data-job='{slow}'] a")
    page.wait_for_selector("h1 .status-cancelled")
    assert page.url.endswith(f"#/jobs/{slow}")


def test_the_job_page_follows_steps_chunks_and_progress_live(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(STREAMING)
    board = ui(server)
    board.open("/")
    job_id = submit(server, words=16, delay=0.25)
    page = board.open(f"/jobs/{job_id}")
    page.wait_for_selector(".step[data-step=generate].step-running")
    page.wait_for_selector(".step[data-step=summarize].step-pending")
    wait_chunks(page, 3)
    seen_running = len(chunks(page))
    assert httpx.get(f"{server.url}/jobs/{job_id}").json()["status"] == "running"
    board.shot("job-running")
    page.wait_for_selector(".step[data-step=generate].step-completed")
    page.wait_for_selector(".step[data-step=summarize] progress")
    board.shot("job-progress")
    page.wait_for_selector(".step[data-step=summarize].step-completed")
    page.wait_for_selector("h1 .status-completed")
    page.wait_for_selector("pre.outputs")
    board.shot("job-completed")
    assert page.locator(".step[data-step=summarize] progress").get_attribute("value") == "1"
    assert "3 / 3" in page.inner_text(".step[data-step=summarize] .step-progress")
    assert "word-0 word-1" in page.inner_text("pre.outputs")
    assert page.locator("button.cancel").count() == 0
    assert_once_in_order(chunks(page), 16)
    print(f"chunks shown while running: {seen_running} of 16")
    # an ended job's page shows it all again from its stored events
    page.reload()
    wait_chunks(page, 16)
    assert_once_in_order(chunks(page), 16)


def test_cancel_from_the_button(serve: Serve, ui: Callable[[ServerProcess], Dashboard]) -> None:
    server = serve(STREAMING)
    board = ui(server)
    board.open("/")
    job_id = submit(server, words=300, delay=0.1)
    page = board.open(f"/jobs/{job_id}")
    wait_chunks(page, 2)
    board.shot("job-before-cancel")
    page.click("button.cancel")
    page.wait_for_selector("h1 .status-cancelled")
    page.wait_for_selector(".step[data-step=generate].step-cancelled")
    assert page.locator("button.cancel").count() == 0
    assert wait_status(server, job_id, {"cancelled"})["status"] == "cancelled"
    board.shot("job-cancelled")


UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Severable:
    """A TCP proxy in front of a server whose connections the test can cut at once (a dropped
    network), and that refuses new ones for a while (closes them, or answers 503 when
    ``unavailable``); it notes each request's first line (and Last-Event-ID)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refusing = threading.Event()
        self.unavailable = False
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.requests: list[str] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                if self.unavailable:
                    with contextlib.suppress(OSError):
                        head = client.recv(65536).split(b"\r\n")[0].decode("latin-1")
                        self.requests.append(f"{head} -> 503")
                        client.sendall(UNAVAILABLE)
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, note: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if note and data[:4] in (b"GET ", b"POST", b"HEAD"):
                    head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                    resume = [h for h in head if h.lower().startswith("last-event-id")]
                    self.requests.append(" ".join([head[0], *resume]))
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection now."""
        with self.lock:
            cut, self.open = self.open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


@pytest.fixture
def severable() -> Iterator[Callable[[str], Severable]]:
    made: list[Severable] = []

    def make(target: str) -> Severable:
        made.append(Severable(target))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


@pytest.mark.parametrize("outage", ["refused", "unavailable", "unavailable-with-key"])
def test_a_dropped_connection_resumes_without_gap_or_duplicate(
    serve: Serve,
    ui: Callable[[ServerProcess], Dashboard],
    severable: Callable[[str], Severable],
    outage: str,
) -> None:
    """``refused``: the browser's EventSource reconnects by itself with Last-Event-ID;
    ``unavailable``: a 503 closes it, and ``follow`` opens a new stream from the start, whose
    replayed events the page must not show twice; ``-with-key``: the new stream needs a new
    stream token, asked while the server is still away."""
    key = "drop-key-777" if outage.endswith("-with-key") else None
    server = serve(STREAMING, **({"ZSERVE_AUTH_KEY": key} if key else {}))
    proxy = severable(server.url)
    proxy.unavailable = outage.startswith("unavailable")
    board = ui(server)
    page = board.page
    page.goto(f"{proxy.url}/ui#/jobs")
    if key:
        page.fill("input[name=key]", key)
        page.click("button[type=submit]")
    page.wait_for_selector("main h1")
    words = 60
    job_id = submit(server, key=key, words=words, delay=0.1)
    page.goto(f"{proxy.url}/ui#/jobs/{job_id}")
    wait_chunks(page, 5)
    # the network drops, and stays down while the job goes on
    proxy.refusing.set()
    proxy.cut()
    before = len(chunks(page))
    time.sleep(3)  # longer than the stream's `retry: 2000`
    missed = len(chunks(page))
    proxy.refusing.clear()
    board.shot(f"job-while-disconnected-{outage}")
    page.wait_for_selector("h1 .status-completed", timeout=60_000)
    page.wait_for_selector(f".chunk-count[data-count='{words}']")
    board.shot(f"job-resumed-{outage}")
    assert_once_in_order(chunks(page), words)
    streams = [r for r in proxy.requests if "/stream/" in r]
    print(f"chunks at the cut: {before}, after 3 s down: {missed}; stream requests: {streams}")
    assert len(streams) >= 2, streams  # it did reconnect
    if proxy.unavailable:  # refused, then a new stream from the start: all replayed
        assert any("-> 503" in r for r in streams), streams
        assert "Last-Event-ID" not in streams[-1], streams
    assert wait_status(server, job_id, {"completed"}, key=key)["status"] == "completed"
    # the browser reports the cut connections (and /info's 401 before the key); nothing else
    board.errors[:] = [
        e for e in board.errors if not any(s in e for s in ("net::ERR_", "503", "401"))
    ]


def test_with_an_auth_key_the_job_page_streams_with_a_token(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    key = "jobs-key-4242"
    server = serve(STREAMING, ZSERVE_AUTH_KEY=key)
    board = ui(server)
    page = board.page
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    board.open("/jobs")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    job_id = submit(server, key=key, words=8, delay=0.2)
    page.wait_for_selector(f"tr[data-job='{job_id}']")
    board.shot("jobs-list-with-key")
    page.click(f"tr[data-job='{job_id}'] a")
    wait_chunks(page, 2)
    page.wait_for_selector("h1 .status-completed")
    assert_once_in_order(chunks(page), 8)
    board.shot("job-with-key")
    assert not [u for u in urls if key in u], "the key went into a URL"
    streams = [u for u in urls if "/stream/" in u]
    assert streams and all("token=" in u for u in streams), streams
    board.errors[:] = [e for e in board.errors if "401" not in e]  # /info before the key


def test_a_failed_job_shows_its_failing_step_and_error(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve("zserve.examples.failing:failing_pipeline")
    job_id = submit(server, value=7)
    wait_status(server, job_id, {"failed"})
    board = ui(server)
    page = board.open(f"/jobs/{job_id}")
    page.wait_for_selector(".step[data-step=explode].step-failed")
    page.wait_for_selector(".step[data-step=load].step-completed")
    page.wait_for_selector("h1 .status-failed")
    assert "cannot process value 7" in page.inner_text(".step[data-step=explode] .step-error")
    assert "cannot process value 7" in page.inner_text(".job-error")
    assert page.locator("button.cancel").count() == 0
    board.shot("job-failed")


def test_a_sync_invoke_s_page_shows_its_state_without_a_stream(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve("zserve.examples.slow:slow_pipeline")
    board = ui(server)
    page = board.open("/jobs")
    answers: list[httpx.Response] = []
    invoke = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/invoke", json={"parameters": {"delay": 3}}, timeout=30)
        )
    )
    invoke.start()
    try:
        row = page.locator("tr.job-row", has=page.locator(".status-running")).first
        row.wait_for()
        assert "sync" in row.inner_text()
        row.locator("a").click()
        page.wait_for_selector("h1 .status-running")
        board.shot("job-sync-running")
        page.wait_for_selector("h1 .status-completed")
        page.wait_for_selector(".step[data-step=wait].step-completed")
        board.shot("job-sync-completed")
    finally:
        invoke.join()
    assert answers[0].status_code == 200
