"""`invoke build`: a wheel of the project in `dist/` and a container build context for
the service; the image itself is built only where a Docker engine answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ops.docker_cli import docker, server_version
from ops.errors import NexusError
from ops.steps import Result, StepContext, StepFn
from service import settings_names as names

BASE_IMAGE = "python:3.11-slim"
DOCKERFILE = """\
# The Nexus booking service: a Restate deployment served by granian over HTTP/2 (h2c).
# Register it with restate-server at http://<this container>:9080.
FROM {base}
COPY {wheel} /tmp/
RUN pip install --no-cache-dir /tmp/{wheel} && rm /tmp/{wheel}
ENV {gateway_url}=http://payment-gateway:9081 \\
    {mail_outbox}=/var/lib/nexus/outbox
EXPOSE 9080
CMD ["python", "-m", "granian", "--interface", "asginl", "--http", "auto", "--loop", "uvloop", \\
     "--host", "0.0.0.0", "--port", "9080", "service.app:app"]
"""


class Build:
    """The build's steps over one project folder."""

    def __init__(
        self, root: Path, image: str = "nexus-booking-service:latest", base: str = BASE_IMAGE
    ) -> None:
        self.root = root
        self.base = base
        self.dist = root / "dist"
        self.context = self.dist / "container"
        self.image = image

    def wheels(self) -> list[Path]:
        return sorted(self.dist.glob("nexus_booking-*.whl"))

    def wheel_step(self, ctx: StepContext) -> Result:
        """A fresh wheel of the project (always rebuilt: the sources may have changed)."""
        if ctx.check:
            return Result.changed(f"would build a wheel into {self.dist}")
        for old in self.wheels():
            old.unlink()
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(self.dist),
            str(self.root),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not self.wheels():
            raise NexusError(f"pip wheel failed:\n{proc.stderr[-2000:]}")
        return Result.changed(f"built {self.wheels()[-1].relative_to(self.root)}")

    def context_step(self, ctx: StepContext) -> Result:
        """`dist/container/`: the wheel and a Dockerfile that installs and serves it."""
        wheels = self.wheels()
        if not wheels:
            if ctx.check:
                return Result.changed(f"would write a container context into {self.context}")
            raise NexusError("no wheel in dist/ to put into the container context")
        wheel = wheels[-1]
        wanted = DOCKERFILE.format(
            wheel=wheel.name,
            base=self.base,
            gateway_url=names.GATEWAY_URL,
            mail_outbox=names.MAIL_OUTBOX,
        )
        dockerfile = self.context / "Dockerfile"
        copied = self.context / wheel.name
        current = dockerfile.read_text() if dockerfile.is_file() else ""
        same = current == wanted and copied.is_file() and copied.read_bytes() == wheel.read_bytes()
        if same:
            return Result.ok(f"{self.context.relative_to(self.root)} up to date")
        if ctx.check:
            return Result.changed(f"would write {dockerfile.relative_to(self.root)}")
        if self.context.exists():
            shutil.rmtree(self.context)
        self.context.mkdir(parents=True)
        shutil.copy2(wheel, copied)
        dockerfile.write_text(wanted)
        return Result.changed(
            f"wrote {self.context.relative_to(self.root)}/ (Dockerfile, {wheel.name})"
        )

    def image_step(self, ctx: StepContext) -> Result:
        """`docker build` of the context, only where a Docker engine answers and holds
        the base image: the build never pulls (no registry need be reachable)."""
        if shutil.which("docker") is None:
            return Result.skipped("no docker client on PATH: image not built")
        version = server_version()
        if version is None:
            return Result.skipped("no Docker engine answers (`docker version`): image not built")
        if docker("image", "inspect", "--format", "{{.Id}}", self.base).returncode != 0:
            raise NexusError(
                f"base image {self.base} is not on this Docker engine ({version}) and"
                " `invoke build` does not pull it (no image registry need be reachable):"
                f" `docker pull {self.base}` where a registry answers, or `docker load` a"
                " saved copy, then build again; the wheel and dist/container/ are ready"
            )
        if ctx.check:
            return Result.changed(f"would build image {self.image} from {self.base}")
        proc = docker("build", "--pull=false", "-t", self.image, str(self.context), timeout=900)
        if proc.returncode != 0:
            raise NexusError(f"docker build failed:\n{proc.stderr[-2000:]}")
        return Result.changed(f"built image {self.image}")

    def steps(self) -> list[tuple[str, StepFn]]:
        return [
            ("wheel", self.wheel_step),
            ("context", self.context_step),
            ("image", self.image_step),
        ]
