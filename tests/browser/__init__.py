"""Browser tests. A package, so this folder's conftest.py is imported as
``browser.conftest`` and does not replace ``tests/conftest.py`` (both would otherwise be
the top-level module ``conftest``)."""
