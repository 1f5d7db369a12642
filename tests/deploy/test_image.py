"""deploy/Dockerfile and .dockerignore, read as text: no Docker engine is needed."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

HEALTH_CHECK = "/opt/fedmesh/grpc_health_check.py"


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: str) -> dict[str, list[tuple[str, str]]]:
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "FROM":
            current = []
            named[rest.split(" AS ")[-1].strip()] = current
        else:
            current.append((keyword, rest))
    return named


@pytest.fixture(scope="module")
def dockerfile(repo: Path) -> str:
    return (repo / "deploy" / "Dockerfile").read_text()


def test_the_image_is_built_in_stages_and_runs_as_a_numeric_non_root_user(
    dockerfile: str,
) -> None:
    built = stages(dockerfile)
    assert list(built) == ["build", "runtime"]
    runtime = built["runtime"]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert len(users) == 1
    uid, gid = users[0].split(":")
    assert int(uid) >= 10000
    assert int(gid) >= 10000
    # The runtime stage gets the virtualenv only, never the sources or the compilers.
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert copies == [
        "--from=build /opt/venv /opt/venv",
        f"deploy/grpc_health_check.py {HEALTH_CHECK}",
    ]
    assert not [rest for keyword, rest in runtime if keyword == "ENTRYPOINT"]


def test_torch_comes_from_the_cpu_index_at_the_pinned_version(dockerfile: str, repo: Path) -> None:
    project: dict[str, Any] = tomllib.loads((repo / "pyproject.toml").read_text())
    (pin,) = [d for d in project["project"]["dependencies"] if d.startswith("torch==")]
    build = stages(dockerfile)["build"]
    args = dict(rest.split("=", 1) for keyword, rest in build if keyword == "ARG" and "=" in rest)
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    (torch_install,) = [r for r in runs if "torch==" in r]
    assert shlex.split(torch_install) == ["pip", "install", "--index-url", "${TORCH_INDEX}", pin]
    # The project itself, installed after torch with the CPU index still in reach.
    assert any(r.startswith('pip install --extra-index-url "${TORCH_INDEX}" .') for r in runs)


def test_writable_directories_exist_for_the_non_root_user(dockerfile: str) -> None:
    runtime = stages(dockerfile)["runtime"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    settings = dict(re.findall(r"(\w+)=(\S+)", env))
    created = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    for variable in ("FEDMESH_REGISTRY_DATA_DIR", "FEDMESH_AGGREGATOR_SPOOL_DIR"):
        assert settings[variable] in created.split(), variable
    assert "-o fedmesh -g fedmesh" in created
    assert settings["HOME"] == "/tmp"
    assert settings["FEDMESH_METRICS_PORT"] == "9464"
    assert settings["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_build_context_allows_exactly_what_the_dockerfile_copies(
    dockerfile: str, repo: Path
) -> None:
    rules = [
        line.strip()
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context is an allow-list"

    def matches(pattern: str, path: str) -> bool:
        # A pattern that matches a directory matches everything under it; "**/" is any depth.
        parts = path.split("/")
        if pattern.startswith("**/"):
            pattern = pattern.removeprefix("**/")
            candidates = [
                "/".join(parts[j : i + 1]) for i in range(len(parts)) for j in range(i + 1)
            ]
        else:
            candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)

    def included(path: str) -> bool:
        verdict = True  # Docker's rule: the last matching pattern wins; "!" re-includes.
        for rule in rules:
            if matches(rule.removeprefix("!"), path):
                verdict = rule.startswith("!")
        return verdict

    copied = [
        source
        for stage in stages(dockerfile).values()
        for keyword, rest in stage
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert set(copied) == {
        "pyproject.toml",
        "README.md",
        "libs",
        "services",
        "deploy/grpc_health_check.py",
    }
    for source in copied:
        assert included(source), source
        assert (repo / source).exists(), source
    assert included("libs/fedmesh/config.py")
    for excluded in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "bench/x.py",
        "libs/fedmesh/__pycache__/config.cpython-311.pyc",
        "deploy/Dockerfile",
    ):
        assert not included(excluded), excluded
