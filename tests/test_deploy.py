"""deploy/: the Dockerfile, the compose file and the Kubernetes example are checked structurally
(no container runtime here): every assay command they run parses as a real command with real
options, every ASSAY_* variable is a real setting, every service they name exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from sqlalchemy.engine import make_url

from assay.cli import main
from assay.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SETTINGS = {env for env, _default, _help in Settings.describe()}


def check_assay_command(args: list[str]) -> None:
    """Parse ``assay ARGS`` as the CLI would, without running it: unknown commands or options fail."""
    command: click.Command = main
    words = list(args)
    while isinstance(command, click.Group):
        assert words, f"assay {' '.join(args)}: names a group, not a command"
        name = words.pop(0)
        assert name in command.commands, f"assay {' '.join(args)}: no command {name!r}"
        command = command.commands[name]
    command.make_context(command.name or "", words)  # raises on unknown options or bad values


def check_environment(env: dict[str, Any], where: str) -> None:
    unknown = sorted(name for name in env if name.startswith("ASSAY_") and name not in SETTINGS)
    assert not unknown, f"{where}: not settings of assay: {unknown}"


def test_the_dockerfile_installs_the_package_and_runs_a_real_command() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    install = next(line for line in lines if "pip install" in line)
    assert "-c constraints.txt" in install and "postgres,redis,s3,ray" in install
    for copied in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in copied.split():
            assert (DEPLOY.parent / source).exists(), (
                f"Dockerfile copies {source}, which is not in the repository"
            )
    entrypoint = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", text, flags=re.M).group(1))  # type: ignore[union-attr]
    command = yaml.safe_load(re.search(r"^CMD (.+)$", text, flags=re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["assay"]
    check_assay_command(command)
    check_environment(dict(re.findall(r"(ASSAY_\w+)=(\S+)", text)), "Dockerfile")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_two_servers_behind_a_proxy_on_shared_services() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "proxy", "ray-head", "migrate"} <= set(services)
    servers = [name for name, s in services.items() if s.get("command", [None])[0] == "serve"]
    assert len(servers) == 2
    for name, service in services.items():
        assert "image" in service, f"{name} has no image"
        for needed in service.get("depends_on", []):
            assert needed in services, f"{name} depends on {needed}, which is not a service"
        if service.get("image") == "assay:latest" and "entrypoint" not in service:
            check_assay_command(service["command"])
            env = service["environment"]
            check_environment(env, name)
            # Every host shares the store, the cache and the artifacts: none of them is local.
            assert env["ASSAY_DATABASE_URL"].startswith("postgresql+psycopg://")
            assert env["ASSAY_REDIS_URL"].startswith("redis://")
            assert env["ASSAY_ARTIFACTS_URL"].startswith("s3://")
            assert make_url(env["ASSAY_DATABASE_URL"]).host in services
    # The servers wait for the migration, which waits for the database.
    for name in servers:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["db", "upgrade"]


def test_the_proxy_sends_traffic_to_the_compose_servers() -> None:
    services = _compose()["services"]
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"server ([\w-]+):(\d+)", conf)
    assert {name for name, _port in upstreams} == {
        n for n, s in services.items() if s.get("command", [None])[0] == "serve"
    }
    assert all(port == "8000" for _name, port in upstreams)
    mounted = services["proxy"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).resolve() == (DEPLOY / "nginx.conf").resolve()


def _kubernetes() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "assay.yaml").read_text()) if doc]


def test_the_kubernetes_example_runs_real_commands_with_real_settings() -> None:
    docs = {(d["kind"], d["metadata"]["name"]) for d in _kubernetes()}
    assert {("Deployment", "assay"), ("Service", "assay"), ("Job", "assay-db-upgrade")} <= docs
    by_kind = {d["kind"]: d for d in _kubernetes()}
    for kind in ("ConfigMap", "Secret"):
        check_environment(by_kind[kind].get("data") or by_kind[kind]["stringData"], kind)
    for kind in ("Deployment", "Job"):
        spec = by_kind[kind]["spec"]["template"]["spec"]
        for container in spec["containers"]:
            check_assay_command(container["args"])
            refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
            assert refs == {"assay"}
    deployment = by_kind["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert by_kind["Service"]["spec"]["selector"] == labels == deployment["spec"]["selector"]["matchLabels"]
    probes = deployment["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("args", [["serve", "--no-such-option"], ["nonsense"], ["db"]])
def test_the_command_check_refuses_what_assay_would(args: list[str]) -> None:
    with pytest.raises((AssertionError, click.UsageError)):
        check_assay_command(args)


def test_the_readme_and_the_scaling_guide_point_at_the_deploy_files() -> None:
    for doc in ("README.md", "docs/scaling.md"):
        text = (DEPLOY.parent / doc).read_text()
        for name in ("deploy/compose.yaml", "deploy/kubernetes/assay.yaml", "deploy/Dockerfile"):
            assert name in text, f"{doc} does not mention {name}"
