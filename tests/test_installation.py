"""The environment flask-guardian runs in: files of another distribution mixed into ours
stop it at import or at init_app with the remedy, never with odd failures later."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import passlib
import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG

from flask_guardian import ConfigurationError, Guardian
from flask_guardian.installation import check_no_namesake


def fake_distribution(site: Path, name: str, author: str) -> Path:
    """A ``<name>-9.9.dist-info`` in ``site``, as pip leaves it, claiming ``flask_guardian``."""
    info = site / f"{name.replace('-', '_')}-9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9\nAuthor: {author}\n"
    )
    (info / "RECORD").write_text("flask_guardian/__init__.py,,\n")
    return site


def test_the_unrelated_flask_guardian_fails_the_import_with_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fake_distribution(tmp_path, "flask-guardian", "Someone Else")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(ImportError) as info:
        check_no_namesake()
    message = str(info.value)
    assert "unrelated package 'flask-guardian' (9.9)" in message
    assert "pip uninstall flask-guardian flask-guardian-sessions" in message

    # What a user sees: ``import flask_guardian`` itself fails.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", "import flask_guardian"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "ImportError: the unrelated package 'flask-guardian'" in result.stderr


def test_this_project_under_its_former_name_is_not_a_namesake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout installed before the rename keeps "flask-guardian" metadata of its own.
    own = fake_distribution(tmp_path / "own", "flask-guardian", "flask-guardian contributors")
    monkeypatch.syspath_prepend(str(own))
    check_no_namesake()

    # ... which must not hide the unrelated project's record found after it.
    other = fake_distribution(tmp_path / "other", "flask-guardian", "Someone Else")
    monkeypatch.setattr(sys, "path", [str(own), str(other), *sys.path])
    with pytest.raises(ImportError, match="unrelated package 'flask-guardian'"):
        check_no_namesake()


def test_no_namesake_installed_passes() -> None:
    check_no_namesake()


def init() -> None:
    app = Flask("installation_test")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI="sqlite://")
    Guardian(app, db=SQLAlchemy(app))


def test_original_passlib_over_libpass_fails_init_app_with_the_remedy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ``pip install passlib`` after libpass replaces libpass's files with 1.7.4's, which
    # cannot load bcrypt >= 4.1: every bcrypt user would be refused without an error.
    monkeypatch.setattr(passlib, "__version__", "1.7.4")
    with pytest.raises(ConfigurationError) as info:
        init()
    assert info.value.key == "passlib"
    assert "version 1.7.4" in str(info.value)
    assert "pip install --force-reinstall libpass" in str(info.value)


@pytest.mark.parametrize("version", ["1.9.3", "1.9.4", "1.10.0.dev1", "2.0"])
def test_libpass_versions_pass(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(passlib, "__version__", version)
    init()
