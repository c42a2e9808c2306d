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
    assert extract(tmp_path, digest, data) == target  # already there
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == [digest]  # no temp left
    # the owner's only: the deployed code is nobody else's to read
    for path in (tmp_path / "code", target, target / "data", target / "flow.py"):
        assert not path.stat().st_mode & 0o077, path
    for bad_digest, bad_data in (("../../etc", data), (digest, pack({"other.py": b""})[1])):
        with pytest.raises(UsageError, match="does not match its address"):
            extract(tmp_path, bad_digest, bad_data)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UsageError, match="not a plain relative file"):
        unpack(gzip.compress(buf.getvalue()))


def test_local_modules_imported_only_when_a_step_runs_are_captured(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    loaded = _tree(root, {
        "flow.py": "def step():\n    import lazy\n    from pkg.sub import thing\n",
        "lazy.py": "V = 1\n",
        "pkg/__init__.py": "",
        "pkg/sub.py": "from .deeper import x\nfrom .. import nothing_above\n",
        "pkg/deeper.py": "x = 1\n",
        "unused.py": "",
    })[:1]  # fmt: skip
    snap = capture(root, loaded)
    assert sorted(snap.files) == [
        "flow.py", "lazy.py", "pkg/__init__.py", "pkg/deeper.py", "pkg/sub.py",
    ]  # fmt: skip


def test_a_linked_module_keeps_its_name_and_an_include_may_not_leave_the_root(
    tmp_path: Path,
) -> None:
    root = tmp_path / "proj"
    _tree(root, {"flow.py": "import helpers\n", "lib/real.py": "X = 1\n"})
    (root / "helpers.py").symlink_to(root / "lib" / "real.py")
    snap = capture(root, [str(root / "flow.py"), str(root / "helpers.py")])
    assert sorted(snap.files) == ["flow.py", "helpers.py"]  # imported as helpers
    _tree(tmp_path / "secrets", {"key.txt": "s3cret"})
    (root / "data").mkdir()
    (root / "data" / "key.txt").symlink_to(tmp_path / "secrets" / "key.txt")
    with pytest.raises(UsageError, match="a link to a file outside"):
        capture(root, [str(root / "flow.py")], ["data/*"])
