from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zserve import registry
from zserve.errors import NotFound, ServerUnreachable, UsageError


def entry(server_id: str, port: int, deployment: str) -> registry.ServerEntry:
    return registry.this_process_entry(
        id=server_id, url=f"http://127.0.0.1:{port}", host="127.0.0.1", port=port,
        deployment_id=f"{deployment}-id", deployment=deployment, pipeline="p", workers=1,
        log_file=None, version="0",
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> str:
    home = str(tmp_path)
    registry.register(home, entry("b1c2d3e4", 9001, "a:1"))
    registry.register(home, entry("a9f8e7d6", 9002, "b:1"))
    registry.register(home, entry("c0c0c0c0", 9003, "b:2"))
    return home


def test_lookup_order_id_port_deployment_prefix(home: str) -> None:
    assert registry.find_server(home, "b1c2d3e4").port == 9001
    assert registry.find_server(home, "9002").id == "a9f8e7d6"
    # "a" is a deployment name, although an id starts with "a" too
    assert registry.find_server(home, "a").id == "b1c2d3e4"
    assert registry.find_server(home, "b:2").id == "c0c0c0c0"
    assert registry.find_server(home, "c0c0").id == "c0c0c0c0"  # 4+ characters: id prefix
    with pytest.raises(NotFound):
        registry.find_server(home, "c0c")
    with pytest.raises(UsageError, match="matches 2 servers"):
        registry.find_server(home, "b")
    with pytest.raises(NotFound):
        registry.find_server(home, "b1c2", deployment_only=True)


def test_no_ref_needs_exactly_one_server(home: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="3 servers are running"):
        registry.find_server(home, None)
    with pytest.raises(ServerUnreachable, match="No zserve server is running"):
        registry.find_server(str(tmp_path / "empty"), None)


def test_stale_entries_are_removed(tmp_path: Path) -> None:
    home = str(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = entry("deadbeef", 9009, "x:1")
    stale = registry.ServerEntry(**{**stale.to_dict(), "pid": dead.pid})
    registry.register(home, stale)
    # a live pid whose create time does not match: another process reused the pid
    reused = registry.ServerEntry(
        **{**entry("feedface", 9010, "y:1").to_dict(), "create_time": 1.0}
    )
    registry.register(home, reused)
    registry.register(home, entry("0a0a0a0a", 9011, "z:1"))
    assert [s.id for s in registry.list_servers(home)] == ["0a0a0a0a"]
    assert sorted(p.name for p in (tmp_path / "servers").iterdir()) == ["0a0a0a0a.json"]
