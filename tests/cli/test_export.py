"""``zserve export k8s|docker``: through Typer's CliRunner on a real SQLite store; the manifests
rendered by ``kubectl kustomize`` (when kubectl is on PATH) and validated offline against the
Kubernetes schemas ``kubernetes-validate`` ships (strict: no unknown field); the Dockerfile read
instruction by instruction."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from zserve._version import __version__
from zserve.cli import app
from zserve.cli._manifests import PRE_STOP_S, k8s_name, to_yaml
from zserve.store import Store

runner = CliRunner()
AUTH_KEY = "s3cret-auth-key-7f1e"
BROKER_PASSWORD = "redis-pass-91ab"
FLOW = """\
import psutil

from zserve import pipeline


@pipeline
def my_flow(x: int) -> int:
    return x + psutil.cpu_count() * 0
"""


def zserve(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture
def deployed(zhome: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A deployment named ``My_Flow`` with a snapshot, and secrets in the environment."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "flow.py").write_text(FLOW)
    result = zserve("deploy", f"{tmp_path / 'src' / 'flow.py'}:my_flow", "--name", "My_Flow",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("ZSERVE_AUTH_KEY", AUTH_KEY)
    monkeypatch.setenv("ZSERVE_BROKER_URL", f"redis://:{BROKER_PASSWORD}@redis:6379/0")
    monkeypatch.setenv("ZSERVE_GRACE_S", "45")
    return dict(json.loads(result.stdout)["deployment"])


def export_k8s(out: Path, *args: str) -> dict[str, dict[str, Any]]:
    result = zserve("export", "k8s", "My_Flow", "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.iterdir())}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def secrets_in(out: Path) -> list[str]:
    found = []
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        found += [f"{path.name}: {s}" for s in (AUTH_KEY, BROKER_PASSWORD) if s.encode() in data]
    return found


def test_k8s_writes_the_objects_and_a_kustomization_listing_them(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    files = export_k8s(out, "--replicas", "3", "--image", "registry.example/flow:7",
                       "--namespace", "prod")  # fmt: skip
    kustomization = files.pop("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(files)
    kinds = {doc["kind"]: doc for doc in files.values()}
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Service"]
    for doc in kinds.values():
        assert doc["metadata"]["namespace"] == "prod"
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "my-flow"

    dep = kinds["Deployment"]
    assert dep["metadata"]["name"] == "my-flow"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodDisruptionBudget"]["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": selector},
    }

    box = container(dep)
    assert box["image"] == "registry.example/flow:7"
    assert [box["command"][0], *box["args"]] == [
        "zserve", "start", "--deployment", deployed["id"], "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert box["startupProbe"]["httpGet"]["path"] == "/health"
    assert box["livenessProbe"]["httpGet"]["path"] == "/health"
    assert box["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert box["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_S)]
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > PRE_STOP_S + 45  # ZSERVE_GRACE_S of the export's environment
    # a liveness probe failing for the whole drain (/health is 503 then) must not kill the pod
    live = box["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > 45

    job = kinds["Job"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert [*migrate["command"], *migrate["args"]] == ["zserve", "db", "upgrade"]
    assert migrate["image"] == "registry.example/flow:7"
    assert [e["name"] for e in migrate["env"]] == ["ZSERVE_STORE_URL"]
    assert "envFrom" not in migrate  # not the ConfigMap's ZSERVE_STORE_MIGRATE=never


def test_secrets_are_referenced_never_written(deployed: dict[str, Any], tmp_path: Path) -> None:
    files = export_k8s(tmp_path / "k8s")
    env = {e["name"]: e for e in container(files["deployment.yaml"])["env"]}
    assert sorted(env) == ["ZSERVE_AUTH_KEY", "ZSERVE_BROKER_URL", "ZSERVE_STORE_URL"]
    for var, key in (("ZSERVE_BROKER_URL", "broker-url"), ("ZSERVE_STORE_URL", "store-url"),
                     ("ZSERVE_AUTH_KEY", "auth-key")):  # fmt: skip
        assert "value" not in env[var]
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("my-flow-secrets", key)
    config = files["configmap.yaml"]["data"]
    assert not {"ZSERVE_AUTH_KEY", "ZSERVE_BROKER_URL", "ZSERVE_STORE_URL"} & set(config)
    assert secrets_in(tmp_path / "k8s") == []
    result = zserve("export", "docker", "My_Flow", "--out", str(tmp_path / "docker"))
    assert result.exit_code == 0, result.output
    assert secrets_in(tmp_path / "docker") == []


def test_the_configmap_is_valid_settings_whose_hosts_pass_the_host_check(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    from zserve.server.guard import HostGuard, split_list
    from zserve.settings import Settings

    data = export_k8s(tmp_path / "k8s", "--namespace", "prod")["configmap.yaml"]["data"]
    assert all(isinstance(v, str) for v in data.values())
    settings = Settings.from_env(data)
    assert settings.deployment_id == deployed["id"]
    assert (settings.host, settings.port, settings.grace_s) == ("0.0.0.0", 8000, 45.0)
    # only the migration Job migrates the shared store; it does not read this ConfigMap
    assert settings.store_migrate == "never"
    assert split_list(settings.allowed_hosts) == [
        "my-flow", "my-flow.prod", "my-flow.prod.svc", "my-flow.prod.svc.cluster.local",
        "localhost",
    ]  # fmt: skip
    guard = HostGuard(lambda *a: None, bind="127.0.0.1", allowed=split_list(settings.allowed_hosts))
    for host in (
        b"my-flow",
        b"my-flow.prod:80",
        b"my-flow.prod.svc.cluster.local",
        b"localhost:8000",
    ):
        assert guard.passes(host), host
    assert not guard.passes(b"my-flow.evil.example")


def test_the_manifests_validate_strictly_and_render_with_kustomize(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out = tmp_path / "k8s"
    files = export_k8s(out, "--replicas", "1")
    files.pop("kustomization.yaml")
    version = kubernetes_validate.latest_version()
    for doc in files.values():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
    # the preStop exec sleep works before the sleep action of Kubernetes 1.30
    kubernetes_validate.validate(files["deployment.yaml"], "1.29.0", strict=True)
    # strict means something: an unknown field is refused
    bad = json.loads(json.dumps(files["deployment.yaml"]))
    container(bad)["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the kustomize rendering is not checked")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["kind"] for d in docs) == sorted(d["kind"] for d in files.values())
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_unknown_deployment_and_a_used_folder_are_refused(
    deployed: dict[str, Any], tmp_path: Path
) -> None:
    result = zserve("export", "k8s", "nope", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: No deployment matches 'nope'")
    assert not (tmp_path / "a").exists()
    result = zserve("export", "docker", "nope", "--out", str(tmp_path / "a"))
    assert result.exit_code == 2 and "Error: No deployment" in result.stderr

    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    for kind in ("k8s", "docker"):
        result = zserve("export", kind, "My_Flow", "--out", str(used))
        assert result.exit_code == 2
        assert result.stderr.startswith(f"Error: --out {used} is not empty")
    assert [p.name for p in used.iterdir()] == ["notes.txt"]
    (used / "service.yaml").write_text("old")
    assert zserve("export", "k8s", "My_Flow", "--out", str(used), "--force").exit_code == 0
    assert (used / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((used / "service.yaml").read_text())["kind"] == "Service"
    result = zserve(
        "export", "k8s", "My_Flow", "--out", str(used), "--namespace", "Bad_NS", "--force"
    )
    assert result.exit_code == 2 and "Invalid namespace 'Bad_NS'" in result.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "a continuation line ends the file"
    return out


def test_docker_writes_a_dockerfile_with_zserve_the_snapshot_and_a_healthcheck(
    deployed: dict[str, Any], tmp_path: Path, zhome: Path
) -> None:
    import psutil

    from zserve.engine.snapshot import extract

    out = tmp_path / "docker"
    result = zserve("export", "docker", "My_Flow", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["image"] == "zserve-my-flow:1"
    assert sorted(p.name for p in out.iterdir()) == [
        ".dockerignore", "Dockerfile", "snapshot.tar.gz", "wheels",
    ]  # fmt: skip
    code_hash = deployed["code_archive"]
    with Store(f"sqlite:///{zhome}/zserve.db") as store:
        assert (out / "snapshot.tar.gz").read_bytes() == store.get_code_archive(code_hash).data
    assert (
        hashlib.sha256(gzip.decompress((out / "snapshot.tar.gz").read_bytes())).hexdigest()
        == code_hash
    )

    steps = dockerfile_instructions((out / "Dockerfile").read_text())
    names = [word for word, _ in steps]
    assert names[0] == "FROM" and steps[0][1] == "python:3.11-slim"
    args = dict(steps)
    env = dict(item.split("=", 1) for item in args["ENV"].split())
    assert env["ZSERVE_DEPLOYMENT_ID"] == deployed["id"]
    install = next(a for w, a in steps if w == "RUN" and "pip install" in a)
    assert f'"zserve=={__version__}"' in install
    assert f'"psutil=={psutil.__version__}"' in install  # what the snapshot imports, pinned
    # the RUN step, run here, unpacks the snapshot where `zserve start` extracts it in the
    # image's ZSERVE_HOME, as it would: the same files
    unpack = next(a for w, a in steps if w == "RUN" and "tar -xzf" in a)
    image_home = tmp_path / "img" / "home"
    shutil.copy(out / "snapshot.tar.gz", tmp_path / "img.tar.gz")
    script = unpack.replace(env["ZSERVE_HOME"], str(image_home))
    script = script.replace("/tmp/snapshot.tar.gz", str(tmp_path / "img.tar.gz"))
    subprocess.run(["sh", "-c", script], check=True, timeout=60)
    unpacked = image_home / "code" / code_hash
    where = extract(tmp_path / "by-zserve", code_hash, (out / "snapshot.tar.gz").read_bytes())
    assert tree(unpacked) == tree(where) and b"def my_flow" in tree(where)["flow.py"]
    # what COPY takes is in the build context, and .dockerignore (all but what it names) keeps it
    ignore = (out / ".dockerignore").read_text().splitlines()
    assert ignore[0] == "*"
    copies = [a.split()[-2] for w, a in steps if w == "COPY"]
    assert copies == ["wheels/", "snapshot.tar.gz"]
    for source in copies:
        assert (out / source).exists() and f"!{source.rstrip('/')}" in ignore
    copy = names.index("COPY", names.index("COPY") + 1)
    assert "--find-links /tmp/wheels" in install
    # a non-root user from the extraction on, and when it serves
    user = names.index("USER")
    assert args["USER"] not in ("root", "0") and copy < user < names.index("RUN", copy)
    assert names.count("USER") == 1 and user < names.index("CMD")
    health = args["HEALTHCHECK"]
    assert health.startswith("--interval=") and "http://127.0.0.1:8000/health" in health
    assert json.loads(args["CMD"]) == ["zserve", "start", "--deployment", deployed["id"]]
    assert args["EXPOSE"] == "8000"


def test_names_become_dns_labels_and_yaml_keeps_strings_strings() -> None:
    assert k8s_name("My_Flow") == "my-flow"
    assert k8s_name("9lives") == "zserve-9lives"
    assert k8s_name("__") == "zserve"
    assert len(k8s_name("x" * 100)) <= 40
    value = {"a": ["0", "true", "8000", 8000, True, "x: y", "", {}, []], "b": {"c": {"d": "é"}}}
    assert yaml.safe_load(to_yaml(value)) == value
