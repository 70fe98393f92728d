"""Which server runtime an environment names: the one module that knows them all, so
neither the single-server runtimes nor the cluster has to import the other back."""

from __future__ import annotations

from ops.base.environments import Environment
from ops.base.processes import ProcessManager
from ops.server.cluster import ClusterRuntime
from ops.server.docker_runtime import DockerRuntime
from ops.server.runtimes import BinaryRuntime, ExternalRuntime, ServerRuntime


def runtime_for(env: Environment, procs: ProcessManager) -> ServerRuntime:
    """The runtime named by `[restate] runtime`."""
    if env.runtime == "binary":
        return BinaryRuntime(env, procs)
    if env.runtime == "docker":
        return DockerRuntime(env)
    if env.runtime == "cluster":
        return ClusterRuntime(env, procs)
    return ExternalRuntime(env)
