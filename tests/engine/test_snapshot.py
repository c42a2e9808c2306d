"""What a snapshot captures and how its archive is packed and extracted, on real files."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import httpx
import pytest

import zserve
from zserve.engine.snapshot import capture, extract, pack, snapshot_root, unpack
from zserve.errors import UsageError


def _tree(root: Path, files: dict[str, str]) -> list[str]:
    paths = []
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(str(path))
    return paths


def test_only_local_code_under_the_root_is_captured(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    loaded = _tree(root, {
        "flow.py": "import httpx\nimport json\nimport helpers\nfrom pkg import mod\n",
        "helpers.py": "X = 1\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "from . import other\n",
        ".venv/lib/python3.11/site-packages/dep/__init__.py": "",
    })  # fmt: skip
    outside = _tree(tmp_path / "elsewhere", {"lib.py": ""})
    snap = capture(root, [*loaded, *outside, zserve.__file__])
    assert sorted(snap.files) == ["flow.py", "helpers.py", "pkg/__init__.py", "pkg/mod.py"]
    # installed distributions the code imports, with their versions; not stdlib, not local
    assert snap.packages == {"httpx": httpx.__version__}


def test_include_globs_add_files_and_bad_globs_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    _tree(root, {"flow.py": "", "data/a.csv": "1", "data/b.csv": "2", "data/c.txt": "3"})
    snap = capture(root, [str(root / "flow.py")], ["data/*.csv"])
    assert sorted(snap.files) == ["data/a.csv", "data/b.csv", "flow.py"]
    assert snap.include == ["data/*.csv"]
    for glob, message in (
        ("../secret", "must be a glob relative to"),
        ("/etc/passwd", "must be a glob relative to"),
        ("*.parquet", "matches no file under"),
    ):
        with pytest.raises(UsageError, match=message):
            capture(root, [], [glob])


def test_a_file_source_outside_the_import_root_is_snapshotted_from_its_folder() -> None:
    assert snapshot_root("/srv/app/flow.py:p", "/srv/app") == Path("/srv/app")
    assert snapshot_root("/tmp/x/flow.py:p", "/srv/app") == Path("/tmp/x")
    assert snapshot_root("pkg.flow:p", "/srv/app") == Path("/srv/app")


def test_extract_is_once_read_only_and_refuses_entries_that_climb_out(tmp_path: Path) -> None:
    files = {"flow.py": b"v1", "data/a.csv": b"1"}
    digest, data = pack(files)
    target = extract(tmp_path, digest, data)
    assert target == tmp_path / "code" / digest
    assert (target / "data" / "a.csv").read_bytes() == b"1"
    assert not (target / "flow.py").stat().st_mode & 0o222
    assert extract(tmp_path, digest, pack({"other.py": b""})[1]) == target  # already there
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == [digest]  # no temp left

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UsageError, match="not a plain relative file"):
        unpack(gzip.compress(buf.getvalue()))
