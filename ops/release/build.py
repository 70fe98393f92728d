"""`invoke build`: the artefact of the version today's sources make for an environment
(the version id deploy computes): the lock, the wheel, and where the environment runs
the service in containers (or `--push` asks for it) the image; `--push REGISTRY` tags
and pushes that image. Building the same sources twice changes nothing."""

from __future__ import annotations

from functools import cached_property

from ops.base.environments import Environment
from ops.base.steps import Result, StepContext, StepFn
from ops.release.artefacts import lock_is_current, make_lock, pins
from ops.release.images import (
    BASE_IMAGE,
    build_base,
    build_service_image,
    image_id,
    image_size_mb,
    image_tag,
    push,
    require_engine,
)
from ops.release.release import Release
from ops.release.stack import Stack


class Build:
    """The build's steps for one environment."""

    def __init__(self, env: Environment, push_to: str = "", upgrade: bool = False) -> None:
        self.env = env
        self.push_to = push_to
        self.upgrade = upgrade

    @cached_property
    def release(self) -> Release:
        """The environment's release, read after the lock step (the id covers the lock)."""
        return Stack(self.env).release

    @property
    def wants_image(self) -> bool:
        return self.env.service_mode == "container" or bool(self.push_to)

    def lock_step(self, ctx: StepContext) -> Result:
        """`service/requirements.lock` was made from today's declared dependencies."""
        package = self.env.root / "service"
        lock = package / "requirements.lock"
        if lock_is_current(package) and not self.upgrade:
            return Result.ok(f"{lock.relative_to(self.env.root)}: {len(pins(lock))} pins, current")
        if ctx.check:
            return Result.changed(f"would lock {package / 'pyproject.toml'} with uv")
        before = pins(lock) if lock.is_file() else {}
        make_lock(package, upgrade=self.upgrade)
        after = pins(lock)
        diff = [
            f"{name}: {before.get(name, '-')} → {after.get(name, '-')}"
            for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)
        ]
        if not diff:
            return Result.ok(f"re-locked {lock.name}: the same {len(after)} pins")
        return Result.changed(f"locked {len(after)} packages into {lock.name}", diff)

    def wheel_step(self, ctx: StepContext) -> Result:
        """The version's wheel and lock in `dist/versions/<id>/`, checked to import."""
        release = self.release
        artefact = release.artefact
        if artefact.present():
            return Result.ok(f"version {release.version}: {artefact.wheel.name} present")
        if ctx.check:
            return Result.changed(f"would build the wheel of version {release.version}")
        built = release.artefacts.build(release.package, release.version, release.build_metadata())
        return Result.changed(f"built {built.wheel.name} (and its lock) in {built.home}")

    def image_step(self, ctx: StepContext) -> Result:
        """`nexus-booking-service:<id>`, on a base made from Debian's packages when none
        is there (nothing is pulled)."""
        if not self.wants_image:
            return Result.skipped(
                f"service mode {self.env.service_mode} runs the wheel; no image needed"
                " (`--push REGISTRY` builds one)"
            )
        engine = require_engine(f"image {image_tag(self.release.version)}")
        tag = image_tag(self.release.version)
        found = image_id(tag)
        if found is not None:
            return Result.ok(f"image {tag} present ({found[7:19]}, {image_size_mb(tag):.0f} MB)")
        if ctx.check:
            base = "" if image_id(BASE_IMAGE) else f" (and first the base {BASE_IMAGE})"
            return Result.changed(f"would build image {tag}{base} on Docker {engine}")
        done = []
        if image_id(BASE_IMAGE) is None:
            build_base()
            done.append(f"base {BASE_IMAGE} from Debian packages")
        built, took = build_service_image(self.release.artefacts, self.release.artefact)
        done.append(f"image {tag} ({built[7:19]}, {image_size_mb(tag):.0f} MB, {took:.1f}s)")
        return Result.changed("built " + " and ".join(done))

    def push_step(self, ctx: StepContext) -> Result:
        """The image at `<registry>/nexus-booking-service:<id>`."""
        if not self.push_to:
            return Result.skipped("no --push registry given")
        target = f"{self.push_to.rstrip('/')}/{image_tag(self.release.version)}"
        if ctx.check:
            return Result.changed(f"would push {target}")
        remote, uploaded = push(self.release.version, self.push_to)
        if not uploaded:
            return Result.ok(f"{remote}: the registry holds every layer already")
        return Result.changed(f"pushed {remote}")

    def steps(self) -> list[tuple[str, StepFn]]:
        return [
            ("lock", self.lock_step),
            ("wheel", self.wheel_step),
            ("image", self.image_step),
            ("push", self.push_step),
        ]
