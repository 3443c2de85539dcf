"""The application-factory layout (docs/application-factory.md): ``db`` in
``app/__init__.py``, the user model in ``app/models.py`` importing it, everything bound in
``create_app()``, with ``Guardian(db=db, user_model="app.models:User")`` resolved at
``init_app``. The package is written from the docs' own code into a temporary folder.
Not storage-dependent: SQLite, database strategy."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import BASE_CONFIG, USER, build_app, doc_files, flask_db, imported_from, sign_in

from flask_guardian import ConfigurationError, Guardian

LAYOUT = doc_files("application-factory.md")
# Flask-Migrate's own generated env.py still calls db.get_engine(): not ours to change.
pytestmark = pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")

ANN = ("ann@example.com", "ann-password-123")


def test_the_docs_show_the_whole_package() -> None:
    assert set(LAYOUT) == {"app/__init__.py", "app/models.py", "app/views.py"}
    assert 'user_model="app.models:User"' in LAYOUT["app/__init__.py"]


def factory_app(package: Any, tmp_path: Path) -> Flask:
    app: Flask = package.create_app(
        {**BASE_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'factory.db'}"}
    )
    with app.app_context():
        package.db.create_all()
    return app


def test_factory_app_from_the_docs_signs_a_user_in(tmp_path: Path) -> None:
    with imported_from(tmp_path, LAYOUT, "app"):
        import app as package

        guardian = package.guardian
        with pytest.raises(RuntimeError, match="init_app"):
            guardian.user_model  # noqa: B018 (nothing imported before init_app)
        app = factory_app(package, tmp_path)
        from app.models import User

        assert guardian.user_model is User
        assert User.__table__.name == "users"
        with app.app_context():
            guardian.create_user(*ANN)
        client = app.test_client()
        anonymous = client.get("/dashboard")
        assert (anonymous.status_code, anonymous.location.split("?")[0]) == (303, "/auth/signin")
        assert sign_in(client, *ANN).status_code == 303
        assert client.get("/dashboard").get_data(as_text=True) == "hello ann@example.com"


def test_one_guardian_serves_every_app_the_factory_makes(tmp_path: Path) -> None:
    with imported_from(tmp_path, LAYOUT, "app"):
        import app as package

        first = factory_app(package, tmp_path)
        second = factory_app(package, tmp_path)
        model = package.guardian.user_model
        with first.app_context():
            package.guardian.create_user(*ANN)
        for app in (first, second):
            assert app.extensions["guardian"].user_model is model
            assert sign_in(app.test_client(), *ANN).status_code == 303


def test_factory_app_from_the_docs_migrates_as_generated(tmp_path: Path) -> None:
    """``flask db init / migrate / upgrade`` on the docs' package (Flask-Migrate set up
    before flask-guardian, as the page shows), then a sign-in."""
    with imported_from(tmp_path, LAYOUT, "app"):
        import app as package

        app = package.create_app(
            {**BASE_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'm.db'}"}
        )
        folder = tmp_path / "migrations"
        flask_db(app, "init", folder)
        flask_db(app, "migrate", folder, message="users and flask-guardian")
        flask_db(app, "upgrade", folder)
        with app.app_context():
            package.guardian.create_user(*ANN)
        client = app.test_client()
        assert sign_in(client, *ANN).status_code == 303
        assert client.get("/dashboard").text == "hello ann@example.com"
        with app.app_context():
            package.db.engine.dispose()


@pytest.mark.parametrize(
    "spec, says",
    [
        ("missing_package_xyz.models:User", "cannot import 'missing_package_xyz.models:User'"),
        ("flask_guardian.models:NoSuchUser", "cannot import"),
        ("flask_guardian.models:utcnow", "not a model mixing in flask_guardian.UserMixin"),
        ("flask_guardian:UserMixin", "not a model mixing in"),
    ],
    ids=["no-module", "no-class", "not-a-class", "the-mixin-itself"],
)
def test_user_model_string_that_cannot_be_used_fails_init_app_naming_the_key(
    tmp_path: Path, spec: str, says: str
) -> None:
    app = Flask("factory_error_app")
    app.config.update(BASE_CONFIG, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'e.db'}")
    db = SQLAlchemy(app)
    guardian = Guardian(db=db, user_model=spec)  # nothing imported yet: no error here
    with pytest.raises(ConfigurationError) as raised:
        guardian.init_app(app)
    assert raised.value.key == "user_model"
    assert str(raised.value).startswith("user_model: ")
    assert says in str(raised.value)
    assert "guardian" not in app.extensions


def test_a_models_module_that_fails_to_import_names_the_key_and_the_cause(
    tmp_path: Path,
) -> None:
    broken = {**LAYOUT, "app/models.py": "from . import no_such_name\n"}
    with imported_from(tmp_path, broken, "app"):
        import app as package

        with pytest.raises(ConfigurationError, match=r"^user_model: .*no_such_name"):
            package.create_app({**BASE_CONFIG, "SQLALCHEMY_DATABASE_URI": "sqlite://"})


@pytest.mark.parametrize("strategy", ["database", "jwt"])
def test_an_app_and_its_db_that_are_gone_are_freed(tmp_path: Path, strategy: str) -> None:
    """A test suite (or a reloader) makes many apps: once one is dropped, nothing of
    flask-guardian may keep its ``db`` (its models, metadata and engines) alive. The
    tables declared on a ``db`` were once kept in module-level WeakKeyDictionaries whose
    values referred back to their key, which made every ``db`` immortal."""
    gone = []
    for index in range(3):
        app = build_app(f"sqlite:///{tmp_path}/{index}.db", strategy)
        client = app.test_client()
        sign_in(client, *USER)
        assert client.get("/dashboard").status_code == 200
        gone.append(weakref.ref(app.extensions["sqlalchemy"]))
        del app, client
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]


def test_apps_of_one_shared_guardian_and_db_are_freed(tmp_path: Path) -> None:
    """The application-factory shape: one module-level ``db`` and ``Guardian()``, an app
    per call. Each app dropped is freed (its state, strategy and engine with it)."""
    db = SQLAlchemy()
    guardian = Guardian(db=db)
    gone = []
    for index in range(3):
        app = Flask(f"factory_{index}")
        app.config.update(BASE_CONFIG,
                          SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/{index}.db")
        db.init_app(app)
        guardian.init_app(app)
        with app.app_context():
            db.create_all()
            guardian.create_user(*USER)
        assert sign_in(app.test_client(), *USER).status_code == 303
        gone.append(weakref.ref(app))
        del app
    gc.collect()
    assert [ref() for ref in gone] == [None, None, None]


def test_a_new_db_listens_even_where_sqlalchemy_remembers_a_dead_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once dbs are freed, a new ``db.session`` may get a dead one's address, and
    ``event.contains`` (which goes by ``id()``) may then answer yes for listeners the new
    one never had: user changes and uniquifiers silently stopped in a long test run.
    Guardian marks its listeners on the db itself; here ``contains`` always says yes."""
    import sqlalchemy.event

    monkeypatch.setattr(sqlalchemy.event, "contains", lambda *args, **kwargs: True)
    app = build_app(f"sqlite:///{tmp_path}/app.db", "jwt")
    client = app.test_client()
    assert sign_in(client, *USER).status_code == 303
    assert client.get("/admin").status_code == 403
    with app.app_context():
        db = app.extensions["sqlalchemy"]
        model = app.extensions["guardian"].user_model
        user = db.session.execute(db.select(model).where(model.email == USER[0])).scalar_one()
        user.role = "admin"
        db.session.commit()
    assert client.get("/admin").status_code == 200
