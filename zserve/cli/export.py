"""``zserve export k8s|docker``: a stored deployment as Kubernetes manifests or a Docker build
context. The objects themselves are built in ``_manifests.py``; this module reads the store,
checks the output folder and writes the files.

The output folder must be new or empty; with ``--force`` the files of the export are written over
and any other file in it is left alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from zserve._version import __version__
from zserve.cli import _manifests
from zserve.cli._output import print_json
from zserve.errors import UsageError
from zserve.settings import Settings

if TYPE_CHECKING:
    from zserve.records import DeploymentRecord

__all__ = ["app", "docker", "k8s"]

app = typer.Typer(
    help="Write Kubernetes manifests or a Dockerfile of a deployment.",
    no_args_is_help=True,
)

REF_HELP = "A deployment: its id, a unique id prefix (8+ characters), a name, or name:version."
OUT_OPTION = typer.Option(..., "--out", "-o", help="The folder to write (new or empty).")
FORCE_OPTION = typer.Option(
    False, "--force", help="Write into a folder that has files (ours are overwritten)."
)
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document.")


@app.command("k8s")
def k8s(
    deployment: str = typer.Argument(..., help=REF_HELP),
    out: Path = OUT_OPTION,
    replicas: int = typer.Option(2, "--replicas", min=1, help="Pods serving it."),
    image: str | None = typer.Option(
        None, "--image", help="The container image (default: zserve-NAME:VERSION)."
    ),
    namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace."),
    force: bool = FORCE_OPTION,
    json_: bool = JSON_OPTION,
) -> None:
    """Write Kubernetes manifests that serve a deployment, and a kustomization.yaml of them.

    A Deployment (rolling updates that never lower the serving pods), its Service, a
    PodDisruptionBudget, a ConfigMap of settings, a Job running `zserve db upgrade`. The broker
    URL, store URL and auth key are read from the Secret NAME-secrets (keys broker-url, store-url,
    auth-key): create it yourself; the manifests hold no secret value."""
    if not _manifests.re_dns_label(namespace):
        raise UsageError(
            f"Invalid namespace {namespace!r}: use lower-case letters, digits and '-' "
            "(at most 63 characters)"
        )
    record = _record(deployment)
    settings = Settings.from_env()
    spec = _manifests.Export(
        deployment_id=record.id,
        deployment_name=record.name,
        version=record.version,
        image=image or default_image(record),
        namespace=namespace,
        replicas=replicas,
        workers=settings.workers,
        grace_s=settings.grace_s,
    )
    files = {file: _manifests.to_yaml(obj) for file, obj in _manifests.manifests(spec).items()}
    written = _write(out, {f: text.encode() for f, text in files.items()}, force)
    secret = (
        f"kubectl -n {namespace} create secret generic {spec.secret} "
        "--from-literal=broker-url=redis://... --from-literal=store-url=postgresql+psycopg://... "
        "--from-literal=auth-key=..."
    )
    if json_:
        print_json({"deployment": record.ref, "deployment_id": record.id, "out": str(out),
                    "files": written, "image": spec.image, "secret": spec.secret})  # fmt: skip
        return
    typer.echo(f"Wrote {len(written)} files for {record.ref} to {out}")
    typer.echo(f"  image {spec.image}, {replicas} replica(s), namespace {namespace}")
    typer.echo(f"  the Secret it reads: {secret}")
    typer.echo(f"  apply: kubectl apply -k {out}")
    if replicas == 1:
        typer.echo(
            "Note: with one replica the PodDisruptionBudget (minAvailable 1) holds node drains "
            "until you add one",
            err=True,
        )


@app.command("docker")
def docker(
    deployment: str = typer.Argument(..., help=REF_HELP),
    out: Path = OUT_OPTION,
    force: bool = FORCE_OPTION,
    json_: bool = JSON_OPTION,
) -> None:
    """Write a Docker build context that serves a deployment: a Dockerfile and its snapshot.

    The image installs this zserve version and the packages the code was deployed with, holds the
    snapshot already extracted, runs as a non-root user and checks /health. It serves the
    deployment from the shared store: run it with ZSERVE_STORE_URL set."""
    from zserve.store import Store

    record = _record(deployment)
    files: dict[str, bytes] = {}
    if record.code_archive:
        settings = Settings.from_env()
        with Store(settings.store_url, migrate=settings.store_migrate) as store:
            data = store.get_code_archive(record.code_archive).data
        assert data is not None
        files["snapshot.tar.gz"] = data
    text = _manifests.dockerfile(
        deployment_id=record.id,
        ref=record.ref,
        code_hash=record.code_archive,
        python=str(record.environment.get("python") or "3.11"),
        packages=dict(record.environment.get("packages") or {}),
    )
    files["Dockerfile"] = text.encode()
    files[".dockerignore"] = _manifests.DOCKERIGNORE.encode()
    files["wheels/README.txt"] = _manifests.WHEELS_README.encode()
    written = _write(out, files, force)
    tag = default_image(record)
    if json_:
        print_json({"deployment": record.ref, "deployment_id": record.id, "out": str(out),
                    "files": written, "image": tag})  # fmt: skip
        return
    typer.echo(f"Wrote {', '.join(written)} for {record.ref} to {out}")
    typer.echo(f"  build: docker build -t {tag} {out}")
    typer.echo(f"  (without zserve {__version__} on your index: put its wheel in {out / 'wheels'})")
    if not record.code_archive:
        typer.echo(
            f"Note: {record.ref} has no snapshot (made before snapshots): the image holds no "
            "code of it; redeploy it to store one",
            err=True,
        )


def default_image(record: DeploymentRecord) -> str:
    """``zserve-NAME:VERSION``: the tag `export docker` suggests and `export k8s` uses."""
    name = _manifests.k8s_name(record.name)
    return f"{name if name.startswith('zserve-') else 'zserve-' + name}:{record.version}"


def _record(ref: str) -> DeploymentRecord:
    from zserve.store import Store

    settings = Settings.from_env()
    with Store(settings.store_url, migrate=settings.store_migrate) as store:
        return store.get_deployment(ref)


def _write(out: Path, files: dict[str, bytes], force: bool) -> list[str]:
    """Write ``files`` into ``out`` (created); a folder with files in it only with ``force``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: name a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--out {out} is not empty: name a new or empty folder, or pass --force to write "
            "the exported files over (other files are left alone)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).parent.mkdir(exist_ok=True)
            (out / name).write_bytes(content)
    except OSError as exc:
        raise UsageError(f"Cannot write to {out}: {exc.strerror or exc}") from None
    return list(files)
