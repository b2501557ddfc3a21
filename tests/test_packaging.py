"""What an installed edgefer carries: every subpackage, and the shipped model as its default."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgefer import shipped
from edgefer.errors import ModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed():
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "edgefer").rglob("__init__.py")}
    assert set(SETUPTOOLS["packages"]) == found | {"edgefer.models"}


def test_the_wheel_carries_the_shipped_model(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgefer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    inside = f"edgefer/models/{shipped.SHIPPED_NAME}"
    for needed in ("model.json", "weights.h5", shipped.SHIPPED_INT8):
        assert f"{inside}/{needed}" in names
    assert "edgefer/cli.py" in names and "edgefer/runtimes/litert.py" in names


def test_shipped_model_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEFER_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    found = shipped.shipped_model()
    assert found.resolve() == (REPO / "models" / shipped.SHIPPED_NAME).resolve()
    int8 = shipped.shipped_int8()
    assert int8.name == shipped.SHIPPED_INT8 or int8 == found


def test_edgefer_model_overrides_and_a_missing_one_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFER_MODEL", str(tmp_path / "elsewhere"))
    with pytest.raises(ModelError, match=r"elsewhere.*EDGEFER_MODEL"):
        shipped.shipped_model()
