"""deploy/Dockerfile, read by BuildKit's own parser (no Docker engine needed), and .dockerignore."""

from __future__ import annotations

import fnmatch
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile as buildkit  # type: ignore[import-not-found]
import pytest

HEALTH_CHECK = "/opt/fedmesh/grpc_health_check.py"


@dataclass(frozen=True)
class Instruction:
    cmd: str
    flags: tuple[str, ...]
    args: tuple[str, ...]


def stages(repo: Path) -> dict[str, list[Instruction]]:
    """The Dockerfile's instructions by stage name, as BuildKit parses them."""
    named: dict[str, list[Instruction]] = {}
    current: list[Instruction] = []
    for command in buildkit.parse_file(str(repo / "deploy" / "Dockerfile")):
        instruction = Instruction(command.cmd.upper(), tuple(command.flags), tuple(command.value))
        if instruction.cmd == "FROM":
            assert instruction.args[1].upper() == "AS", "every stage is named"
            current = []
            named[instruction.args[2]] = current
        else:
            current.append(instruction)
    return named


def of(stage: list[Instruction], cmd: str) -> list[Instruction]:
    return [i for i in stage if i.cmd == cmd]


def env(stage: list[Instruction]) -> dict[str, str]:
    pairs = [i.args for i in of(stage, "ENV")]
    return {k: v for args in pairs for k, v in zip(args[::2], args[1::2], strict=True)}


KNOWN = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip


def test_buildkit_parses_the_dockerfile_into_known_instructions(repo: Path, tmp_path: Path) -> None:
    commands = buildkit.parse_file(str(repo / "deploy" / "Dockerfile"))
    assert {c.cmd.upper() for c in commands} <= KNOWN
    # CMD in exec form (JSON): no shell between the container and fedmesh, signals reach it.
    (cmd,) = [c for c in commands if c.cmd.upper() == "CMD"]
    assert cmd.json is True

    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:3.11-slim\nENV PATH\n")
    with pytest.raises(buildkit.GoParseError, match="ENV must have two arguments"):
        buildkit.parse_file(str(broken))


def test_the_image_is_built_in_stages_and_runs_as_a_numeric_non_root_user(repo: Path) -> None:
    built = stages(repo)
    assert list(built) == ["build", "runtime"]
    runtime = built["runtime"]
    (user,) = of(runtime, "USER")
    uid, gid = user.args[0].split(":")
    assert int(uid) >= 10000
    assert int(gid) >= 10000
    # The runtime stage gets the virtualenv only, never the sources or the compilers.
    assert [(i.flags, i.args) for i in of(runtime, "COPY")] == [
        (("--from=build",), ("/opt/venv", "/opt/venv")),
        ((), ("deploy/grpc_health_check.py", HEALTH_CHECK)),
    ]
    assert of(runtime, "ENTRYPOINT") == []
    (cmd,) = of(runtime, "CMD")
    assert cmd.args[0] == "fedmesh"


def test_torch_comes_from_the_cpu_index_at_the_pinned_version(repo: Path) -> None:
    project: dict[str, Any] = tomllib.loads((repo / "pyproject.toml").read_text())
    (pin,) = [d for d in project["project"]["dependencies"] if d.startswith("torch==")]
    build = stages(repo)["build"]
    args = dict(a.args[0].split("=", 1) for a in of(build, "ARG"))
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    runs = [shlex.split(r.args[0]) for r in of(build, "RUN")]
    (torch_install,) = [r for r in runs if any(word.startswith("torch==") for word in r)]
    assert torch_install == ["pip", "install", "--index-url", "${TORCH_INDEX}", pin]
    # The project itself, after torch, with the CPU index still in reach.
    project_install = ["pip", "install", "--extra-index-url", "${TORCH_INDEX}", "."]
    (project_run,) = [r for r in runs if r[:5] == project_install]
    assert runs.index(torch_install) < runs.index(project_run)


def test_writable_directories_exist_for_the_non_root_user(repo: Path) -> None:
    runtime = stages(repo)["runtime"]
    settings = env(runtime)
    created = [word for run in of(runtime, "RUN") for word in shlex.split(run.args[0])]
    for variable in ("FEDMESH_REGISTRY_DATA_DIR", "FEDMESH_AGGREGATOR_SPOOL_DIR"):
        assert settings[variable] in created, variable
    assert created[created.index("install") : created.index("install") + 7] == [
        "install",
        "-d",
        "-o",
        "fedmesh",
        "-g",
        "fedmesh",
        "-m",
    ]
    assert settings["HOME"] == "/tmp"
    assert settings["FEDMESH_METRICS_PORT"] == "9464"
    assert settings["PYTHONDONTWRITEBYTECODE"] == "1"


def test_the_build_context_allows_exactly_what_the_dockerfile_copies(repo: Path) -> None:
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
        for stage in stages(repo).values()
        for copy in of(stage, "COPY")
        if not any(flag.startswith("--from") for flag in copy.flags)
        for source in copy.args[:-1]
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
