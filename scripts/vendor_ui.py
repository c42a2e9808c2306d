"""The dashboard's vendored libraries (``scripts/vendor-ui``): which files of which pinned npm
package, checked against the registry's sha512 integrity, copied with their licences."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"

#: package, version, sha512 integrity (as the registry publishes it), {file in it: vendored name}.
#: htm's standalone build bundles Preact 10 (MIT): its licence comes from the preact package.
PINS = [
    ("htm", "3.1.1", "sha512-983Vyg8NwUE7JkZ6NmOqpCZ+sh1bKv2iYTlUkzlWmA5JD2acKoxd4KVxbMmxX/85mtfdnDmTFoNKcg5DGAvxNQ==", {
        "package/preact/standalone.module.js": "htm-preact.module.js",
        "package/LICENSE": "LICENSE.htm.txt",
    }),
    ("preact", "10.9.0", "sha512-jO6/OvCRL+OT8gst/+Q2ir7dMybZAX8ioP02Zmzh3BkQMHLyqZSujvxbUriXvHi8qmhcHKC2Gwbog6Kt+YTh+Q==", {
        "package/LICENSE": "LICENSE.preact.txt",
    }),
    ("uplot", "1.6.32", "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==", {
        "package/dist/uPlot.esm.js": "uPlot.esm.js",
        "package/dist/uPlot.min.css": "uPlot.min.css",
        "package/LICENSE": "LICENSE.uplot.txt",
    }),
]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 (a fixed https URL)
        data: bytes = answer.read()
    return data


def files(name: str, version: str, integrity: str | None) -> dict[str, bytes]:
    meta = json.loads(fetch(f"{REGISTRY}/{name}/{version}"))
    published = meta["dist"]["integrity"]
    if integrity is not None and integrity != published:
        raise SystemExit(f"{name}@{version}: the registry's integrity changed: {published}")
    tarball = fetch(meta["dist"]["tarball"])
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != published:
        raise SystemExit(f"{name}@{version}: the tarball does not match {published}")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                found[member.name] = handle.read()
    return found


def main() -> int:
    out = Path(sys.argv[1])
    check = "--check" in sys.argv[2:]
    stale = []
    out.mkdir(parents=True, exist_ok=True)
    lines = ["The dashboard's vendored libraries (scripts/vendor-ui):", ""]
    for name, version, integrity, wanted in PINS:
        got = files(name, version, integrity)
        lines.append(f"- {name} {version} from the npm registry ({integrity}): LICENSE.{name}.txt")
        for source, target in wanted.items():
            if (out / target).exists() and (out / target).read_bytes() == got[source]:
                continue
            stale.append(target)
            if not check:
                (out / target).write_bytes(got[source])
    readme = "\n".join(lines) + "\n"
    if not (out / "README.txt").exists() or (out / "README.txt").read_text() != readme:
        stale.append("README.txt")
        if not check:
            (out / "README.txt").write_text(readme)
    if check and stale:
        print("stale: " + ", ".join(stale))
        return 1
    print("up to date" if not stale else "wrote " + ", ".join(stale))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
