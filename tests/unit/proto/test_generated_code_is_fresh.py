"""The committed generated code must be what `make proto` makes from protos/ now."""

import filecmp
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "libs" / "fedmesh" / "proto"


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_the_protos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    _generator().generate(tmp_path / "proto")  # type: ignore[attr-defined]

    fresh, committed = _files(tmp_path / "proto"), _files(COMMITTED)

    assert fresh == committed, "run `make proto`: generated files differ in number or name"
    stale = [
        str(p)
        for p in sorted(fresh)
        if not filecmp.cmp(tmp_path / "proto" / p, COMMITTED / p, shallow=False)
    ]
    assert stale == [], f"run `make proto`: stale generated files {stale}"
