"""What ``zserve export`` writes, as data: the Kubernetes objects of a deployment, the Dockerfile
of its image, and plain YAML text of them. Pure functions: no store, no files (``export.py``).

The pods serve the deployment by id from the shared store (``ZSERVE_STORE_URL``, PostgreSQL) with
the shared broker (``ZSERVE_BROKER_URL``, Redis): both URLs and the auth key come from a Secret
by reference (``secretKeyRef``), never as values. Every other setting is in a ConfigMap.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from zserve._version import __version__

__all__ = [
    "CONTAINER_PORT",
    "DOCKERIGNORE",
    "PRE_STOP_S",
    "SECRET_KEYS",
    "WHEELS_README",
    "Export",
    "dockerfile",
    "k8s_name",
    "manifests",
    "re_dns_label",
    "to_yaml",
]

#: The port the container listens on (all addresses: the Service and the probes reach it).
CONTAINER_PORT = 8000
#: The pause before SIGTERM, while endpoints controllers and load balancers forget the pod.
PRE_STOP_S = 10
#: Seconds beyond preStop + zserve's own grace before the kubelet's SIGKILL.
GRACE_MARGIN_S = 10
#: setting -> key of the Secret that holds it
SECRET_KEYS = {
    "ZSERVE_BROKER_URL": "broker-url",
    "ZSERVE_STORE_URL": "store-url",
    "ZSERVE_AUTH_KEY": "auth-key",
}
#: Where the image keeps zserve's home (extracted snapshots live in its code/ folder).
IMAGE_HOME = "/home/zserve/.zserve"
#: What the image installs beside zserve: the PostgreSQL driver and the Redis client.
SERVER_PACKAGES = ("psycopg[binary]>=3.1", "redis>=5")
#: Default resources of a serving container (edit the YAML or patch it with kustomize).
RESOURCES = {
    "requests": {"cpu": "250m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


@dataclass(frozen=True)
class Export:
    """What the objects are made of: the deployment and the choices of the command line."""

    deployment_id: str
    deployment_name: str
    version: int
    image: str
    namespace: str = "default"
    replicas: int = 2
    workers: int = 1
    grace_s: float = 30.0

    @property
    def name(self) -> str:
        return k8s_name(self.deployment_name)

    @property
    def secret(self) -> str:
        return f"{self.name}-secrets"

    def service_hosts(self) -> list[str]:
        """Every name the Service is called by inside the cluster, and localhost for probes."""
        svc = f"{self.name}.{self.namespace}.svc"
        names = [self.name, f"{self.name}.{self.namespace}", svc, f"{svc}.cluster.local"]
        return [*names, "localhost"]

    @property
    def termination_grace_s(self) -> int:
        """Longer than the preStop pause plus zserve's own drain (``ZSERVE_GRACE_S``)."""
        return PRE_STOP_S + math.ceil(self.grace_s) + GRACE_MARGIN_S


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def re_dns_label(text: str) -> bool:
    """``text`` is a DNS-1123 label (a namespace's name)."""
    return bool(_DNS_LABEL.match(text))


def k8s_name(name: str) -> str:
    """A deployment's name as a Kubernetes object name (DNS-1123 label, room for suffixes)."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    text = re.sub(r"-{2,}", "-", text)[:40].rstrip("-")
    return text if text and text[0].isalpha() else f"zserve-{text}".rstrip("-")


def _labels(x: Export, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": x.name,
        "app.kubernetes.io/instance": x.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": str(x.version),
        "app.kubernetes.io/part-of": "zserve",
        "app.kubernetes.io/managed-by": "zserve-export",
    }


def _selector(x: Export) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": x.name,
        "app.kubernetes.io/instance": x.name,
        "app.kubernetes.io/component": "server",
    }


def _meta(x: Export, name: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": x.namespace, "labels": _labels(x, component)}


def _secret_env(x: Export, names: list[str]) -> list[dict[str, Any]]:
    env = []
    for var in names:
        ref: dict[str, Any] = {"name": x.secret, "key": SECRET_KEYS[var]}
        if var == "ZSERVE_AUTH_KEY":
            ref["optional"] = True  # without it the server answers without auth
        env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    return env


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def config_map(x: Export) -> dict[str, Any]:
    data = {
        "ZSERVE_DEPLOYMENT_ID": x.deployment_id,
        "ZSERVE_HOST": "0.0.0.0",
        "ZSERVE_PORT": str(CONTAINER_PORT),
        "ZSERVE_WORKERS": str(x.workers),
        "ZSERVE_GRACE_S": f"{x.grace_s:g}",
        "ZSERVE_ALLOWED_HOSTS": ",".join(x.service_hosts()),
        "ZSERVE_LOG_FORMAT": "json",
        # the migration Job (`zserve db upgrade`) migrates the shared store; a pod that finds
        # it behind exits 3 and is restarted until it is at head, never migrating it itself
        "ZSERVE_STORE_MIGRATE": "never",
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(x, f"{x.name}-config", "server"),
        "data": data,
    }


def deployment(x: Export) -> dict[str, Any]:
    container = {
        "name": "zserve",
        "image": x.image,
        "command": ["zserve"],
        "args": [
            "start",
            "--deployment",
            x.deployment_id,
            "--host",
            "0.0.0.0",
            "--port",
            str(CONTAINER_PORT),
        ],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": f"{x.name}-config"}}],
        "env": _secret_env(x, list(SECRET_KEYS)),
        # /health is 503 until the resources are built: up to 5 minutes to start
        "startupProbe": _probe("/health", 2, 150),
        # /health is 503 while draining: a minute of failures outlasts a drain
        "livenessProbe": _probe("/health", 10, 6),
        "readinessProbe": _probe("/readyz", 5, 2),
        # an exec sleep (not the sleep action of Kubernetes 1.30+): works on older clusters too
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_S)]}}},
        "resources": RESOURCES,
        "securityContext": _container_security(),
    }
    pod = {
        "metadata": {"labels": _labels(x, "server")},
        "spec": {
            "terminationGracePeriodSeconds": x.termination_grace_s,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
            "containers": [container],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(x, x.name, "server"),
        "spec": {
            "replicas": x.replicas,
            "selector": {"matchLabels": _selector(x)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": pod,
        },
    }


def service(x: Export) -> dict[str, Any]:
    port = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(x, x.name, "server"),
        "spec": {"type": "ClusterIP", "selector": _selector(x), "ports": [port]},
    }


def disruption_budget(x: Export) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(x, x.name, "server"),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _selector(x)}},
    }


def migration_job(x: Export) -> dict[str, Any]:
    container = {
        "name": "db-upgrade",
        "image": x.image,
        "command": ["zserve"],
        "args": ["db", "upgrade"],
        "env": _secret_env(x, ["ZSERVE_STORE_URL"]),
        "resources": RESOURCES,
        "securityContext": _container_security(),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(x, f"{x.name}-db-upgrade", "migration"),
        "spec": {
            "backoffLimit": 3,
            # a finished Job is removed, so applying the manifests again runs it again
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": _labels(x, "migration")},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [container],
                },
            },
        },
    }


def manifests(x: Export) -> dict[str, dict[str, Any]]:
    """File name -> the object it holds; ``kustomization.yaml`` lists the others."""
    files = {
        "configmap.yaml": config_map(x),
        "deployment.yaml": deployment(x),
        "service.yaml": service(x),
        "pdb.yaml": disruption_budget(x),
        "migration-job.yaml": migration_job(x),
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    return {**files, "kustomization.yaml": kustomization}


def dockerfile(
    *, deployment_id: str, ref: str, code_hash: str | None, python: str, packages: dict[str, str]
) -> str:
    """The Dockerfile of an image serving one deployment: zserve at this version, the packages
    its code was deployed with, and its snapshot extracted where ``zserve start`` looks for it
    (``$ZSERVE_HOME/code/<hash>/``), so the server never extracts it again."""
    minor = ".".join(python.split(".")[:2]) or "3.11"
    wanted = [f"zserve=={__version__}", *SERVER_PACKAGES]
    wanted += [f"{dist}=={version}" for dist, version in sorted(packages.items())]
    pip = " \\\n        ".join(json.dumps(item) for item in wanted)
    lines = [
        f"# The image of zserve deployment {ref} ({deployment_id}), by `zserve export docker`.",
        "# It serves the deployment from the shared store: set ZSERVE_STORE_URL (and",
        "# ZSERVE_BROKER_URL, ZSERVE_AUTH_KEY) when it runs; `zserve db upgrade` migrates it.",
        f"FROM python:{minor}-slim",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\",
        f"    ZSERVE_HOME={IMAGE_HOME} ZSERVE_HOST=0.0.0.0 ZSERVE_PORT={CONTAINER_PORT} \\",
        f"    ZSERVE_DEPLOYMENT_ID={deployment_id}",
        # wheels/ holds zserve's wheel when the package index has none (WHEELS_README)
        "COPY wheels/ /tmp/wheels/",
        f"RUN pip install --no-cache-dir --find-links /tmp/wheels \\\n        {pip} \\",
        "    && rm -rf /tmp/wheels",
        "RUN useradd --create-home --uid 10001 --user-group zserve",
    ]
    if code_hash:
        lines += [
            "COPY --chown=10001:10001 snapshot.tar.gz /tmp/snapshot.tar.gz",
            "USER 10001",
            f'RUN code={IMAGE_HOME}/code/{code_hash} && mkdir -p "$code" \\',
            '    && tar -xzf /tmp/snapshot.tar.gz -C "$code" && rm /tmp/snapshot.tar.gz',
        ]
    else:
        lines.append("USER 10001")
    probe = f"http://127.0.0.1:{CONTAINER_PORT}/health"
    check = f"import urllib.request; urllib.request.urlopen('{probe}', timeout=2)"
    lines += [
        "WORKDIR /home/zserve",
        f"EXPOSE {CONTAINER_PORT}",
        "HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\",
        f"    CMD {json.dumps(['python', '-c', check])}",
        "STOPSIGNAL SIGTERM",
        f"CMD {json.dumps(['zserve', 'start', '--deployment', deployment_id])}",
    ]
    return "\n".join(lines) + "\n"


DOCKERIGNORE = "*\n!snapshot.tar.gz\n!wheels\n"
WHEELS_README = f"""\
Wheels pip prefers when the image is built: put zserve's here when your package index has no
zserve {__version__}:  pip wheel --no-deps -w wheels /path/to/zserve
"""


def to_yaml(value: Any) -> str:
    """Block-style YAML, keys in the order written (PyYAML quotes the strings that would read
    as something else: "8000", "true")."""
    text: str = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000)
    return text
