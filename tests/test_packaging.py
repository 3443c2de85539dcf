"""The sdist and the wheel are what a user installs: the sdist is a whole checkout (docs,
examples, tests, scripts), the wheel is the package with its templates and ``py.typed``,
both under the distribution name ``flask-guardian-sessions``; and no document tells anyone
to install the unrelated ``flask-guardian``.

``scripts/test`` builds both before pytest and points ``GUARDIAN_TEST_DIST`` at them; run
alone, this module builds them itself into a temporary directory (a few seconds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import NamedTuple

import pytest

import flask_guardian

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
VERSION = PYPROJECT["project"]["version"]
STEM = f"flask_guardian_sessions-{VERSION}"


class Artefacts(NamedTuple):
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    given = os.environ.get("GUARDIAN_TEST_DIST")
    if given:
        where = Path(given)
    else:
        where = tmp_path_factory.mktemp("dist")
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(where), str(ROOT)],
            check=True, capture_output=True, timeout=300,
        )
    found = Artefacts(where / f"{STEM}.tar.gz", where / f"{STEM}-py3-none-any.whl")
    assert found.sdist.is_file() and found.wheel.is_file(), sorted(os.listdir(where))
    return found


def sdist_names(artefacts: Artefacts) -> set[str]:
    with tarfile.open(artefacts.sdist) as sdist:
        return {name.partition("/")[2] for name in sdist.getnames()}


def tracked_files(*folders: str) -> list[str]:
    """The files git tracks in ``folders``, or [] outside a git checkout (an unpacked sdist)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "--", *folders], cwd=ROOT, capture_output=True, text=True,
            check=True, timeout=60,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return result.stdout.split()


def test_versions_agree() -> None:
    assert flask_guardian.__version__ == VERSION


def test_sdist_is_a_whole_checkout(artefacts: Artefacts) -> None:
    names = sdist_names(artefacts)
    assert {
        "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.cfg", "PKG-INFO",
        "scripts/test", "scripts/run-example", "docs/index.md", "docs/configuration.md",
        "examples/app.py", "tests/conftest.py", "tests/test_packaging.py",
        "flask_guardian/__init__.py", "flask_guardian/py.typed",
    } <= names
    # Everything git tracks in these folders, so scripts/test runs from an unpacked sdist.
    missing = set(tracked_files("docs", "examples", "tests", "scripts", "benchmarks")) - names
    assert missing == set()
    assert [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db"))] == []


def test_sdist_script_stays_executable(artefacts: Artefacts) -> None:
    with tarfile.open(artefacts.sdist) as sdist:
        test_script = sdist.getmember(f"{STEM}/scripts/test")
    assert test_script.mode & 0o111


def test_wheel_holds_the_package_with_templates_py_typed_and_openapi(artefacts: Artefacts) -> None:
    with zipfile.ZipFile(artefacts.wheel) as wheel:
        names = set(wheel.namelist())
    templates = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "flask_guardian" / "templates").rglob("*.html")
    }
    modules = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "flask_guardian").rglob("*.py")
    }
    assert templates and modules
    # The OpenAPI document served at <prefix>/openapi.json is read from the package.
    assert {"flask_guardian/py.typed", "flask_guardian/openapi.json", *templates,
            *modules} <= names
    assert f"{STEM}.dist-info/licenses/LICENSE" in names
    assert {n.split("/")[0] for n in names} == {"flask_guardian", f"{STEM}.dist-info"}


def test_metadata_names_the_distribution_and_its_license(artefacts: Artefacts) -> None:
    with zipfile.ZipFile(artefacts.wheel) as wheel:
        text = wheel.read(f"{STEM}.dist-info/METADATA").decode()
    metadata = HeaderParser().parsestr(text)
    assert metadata["Name"] == "flask-guardian-sessions"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = set(metadata.get_all("Classifier"))
    assert {
        "Development Status :: 4 - Beta", "Framework :: Flask",
        "Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    } <= classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: expression only
    assert any(url.startswith("Homepage, https://") for url in metadata.get_all("Project-URL"))


def test_build_backend_floor_reads_the_license_expression() -> None:
    # setuptools 77 is the first that understands `license = "MIT"` with license-files.
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text("utf-8")


#: "pip install flask-guardian" (also uv/poetry, with extras or a version), but not
#: "flask-guardian-sessions" and not "pip install ." or a wheel path.
NAMESAKE_INSTALL = re.compile(
    r"\b(?:pip3?|python3? -m pip|uv pip|uv|poetry|pipx)\s+(?:install|add)\s+"
    r"(?:-\S+\s+)*[\"']?flask[-_.]guardian(?![-_.]?sessions)(?![\w-])",
    re.IGNORECASE,
)


def test_the_pattern_catches_namesake_installs() -> None:
    for line in ('pip install flask-guardian', 'pip install "flask-guardian[postgres]"',
                 "python -m pip install -U Flask-Guardian==1.0", "uv add flask_guardian"):
        assert NAMESAKE_INSTALL.search(line), line
    for line in ("pip install flask-guardian-sessions", "pip install .",
                 "pip install dist/flask_guardian_sessions-0.1.0-py3-none-any.whl",
                 "pip uninstall flask-guardian"):
        assert not NAMESAKE_INSTALL.search(line), line


def test_no_document_installs_the_unrelated_flask_guardian() -> None:
    # The package's own messages are instructions too.
    documents = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"),
                 *(ROOT / "examples").rglob("*"), *(ROOT / "scripts").iterdir(),
                 *(ROOT / "flask_guardian").rglob("*.py")]
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in documents
        if path.is_file() and "__pycache__" not in path.parts
        and path.suffix not in {".png", ".jpg", ".pyc"}
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if NAMESAKE_INSTALL.search(line)
    ]
    assert offending == []
