"""Reading a cluster with the kubernetes client and the admin kubeconfig bootstrap fetched.

`snapshot(kubeconfig)` returns the objects the judgement reads, as the camelCase dicts the API sends.
Failures are PyctlErrors with one line: no kubeconfig yet (exit 2: run bootstrap), an unreadable
kubeconfig, an API server that does not answer or refuses the credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyctl.config import Settings
from pyctl.errors import ExitCode, PyctlError, UsageError
from pyctl.k8s.health import Snapshot

TIMEOUT_SECONDS = 15


class ClusterUnreachable(PyctlError):
    """The API server did not answer, or refused the kubeconfig's credentials."""

    exit_code = ExitCode.HOST_FAILED


def kubeconfig_for(settings: Settings, cluster_name: str, inventory: Path) -> Path:
    """The fetched admin kubeconfig of the cluster; a UsageError (exit 2) when bootstrap has not fetched it."""
    path = settings.kubeconfig(cluster_name)
    if not path.is_file():
        raise UsageError(
            f"no kubeconfig for cluster {cluster_name!r} yet ({path} does not exist)",
            hint=f"run 'pyctl bootstrap -i {inventory}' first: its control_plane phase fetches it",
        )
    return path


def client(kubeconfig: Path) -> Any:
    """An ApiClient for the kubeconfig's current context."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        return config.new_client_from_config(config_file=str(kubeconfig))
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"the kubeconfig {kubeconfig} cannot be used: {exc}",
            hint="run pyctl bootstrap again to fetch a fresh one",
        ) from exc


def server(api_client: Any) -> str:
    return str(getattr(api_client.configuration, "host", "") or "?")


def _call(api_client: Any, what: str, fn: Any, **kwargs: Any) -> list[dict[str, Any]]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        result = fn(_request_timeout=TIMEOUT_SECONDS, **kwargs)
    except ApiException as exc:
        reason = f"{exc.status} {exc.reason}".strip()
        if exc.status in (401, 403):
            raise ClusterUnreachable(
                f"the API server at {server(api_client)} refused the kubeconfig while listing {what} ({reason})",
                hint="the fetched kubeconfig may be from an earlier cluster: run pyctl bootstrap again",
            ) from exc
        raise ClusterUnreachable(f"listing {what} at {server(api_client)} failed ({reason})") from exc
    except (HTTPError, OSError) as exc:
        raise ClusterUnreachable(
            f"the API server at {server(api_client)} does not answer ({type(exc).__name__}: {exc})",
            hint="is the control plane host up? (ssh to it: systemctl status kubelet; crictl ps)",
        ) from exc
    return [api_client.sanitize_for_serialization(item) for item in result.items]


def snapshot(api_client: Any) -> Snapshot:
    """Nodes, pods, DaemonSets and claims of every namespace."""
    from kubernetes import client as k8s

    core, apps = k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client)
    return Snapshot(
        nodes=_call(api_client, "nodes", core.list_node),
        pods=_call(api_client, "pods", core.list_pod_for_all_namespaces),
        daemonsets=_call(api_client, "DaemonSets", apps.list_daemon_set_for_all_namespaces),
        claims=_call(api_client, "PersistentVolumeClaims", core.list_persistent_volume_claim_for_all_namespaces),
    )
