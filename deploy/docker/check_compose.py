"""CI check of deploy/docker/docker-compose.yml without Docker (no engine runs in CI).

Compose itself is not available here, so this checks what breaks silently when files move: the YAML
parses, every service has an image or a build whose context and Dockerfile exist, every relative bind
mount points at a file or directory of the repository, and every named volume and secret is declared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
COMPOSE = HERE / "docker-compose.yml"


def main() -> int:
    spec = yaml.safe_load(COMPOSE.read_text())
    problems: list[str] = []
    volumes = set(spec.get("volumes") or {})
    secrets = set(spec.get("secrets") or {})
    services = spec.get("services") or {}
    if not services:
        problems.append("no services")
    for name, service in services.items():
        build = service.get("build")
        if not service.get("image") and not build:
            problems.append(f"{name}: neither image nor build")
        if build:
            context = (HERE / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: build file {dockerfile} does not exist")
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                if not (HERE / source).exists():
                    problems.append(f"{name}: bind mount source {source} does not exist")
            elif source not in volumes:
                problems.append(f"{name}: volume {source} is not declared under volumes:")
        for secret in service.get("secrets") or []:
            if secret not in secrets:
                problems.append(f"{name}: secret {secret} is not declared under secrets:")
        for dependency in service.get("depends_on") or []:
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency}")
    for problem in problems:
        print(f"ERROR {COMPOSE.name}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{COMPOSE.name}: {len(services)} services, build files, mounts, volumes and secrets resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
