"""Refuse to run on files mixed with those of the unrelated ``flask-guardian`` project.

This project's distribution is ``flask-guardian-sessions``; the name ``flask-guardian`` on
the package index belongs to another project whose import package is also
``flask_guardian``. Installed into one environment, the two write into the same directory
and overwrite each other's files, so what gets imported is a mixture of both. Importing
``flask_guardian`` runs :func:`check_no_namesake` once, which fails with the remedy
instead of leaving an odd ``AttributeError`` to be explained later.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "flask-guardian-sessions"
NAMESAKE = "flask-guardian"
#: This project's author field; it once used the distribution name ``flask-guardian``, and
#: a checkout installed before the rename keeps that metadata until it is reinstalled.
OWN_AUTHOR = "flask-guardian contributors"


def check_no_namesake() -> None:
    """Raise ImportError when the unrelated ``flask-guardian`` distribution is installed.

    One metadata search by name (well under a millisecond), run once per process. Every
    match is looked at: a stale record of this project under its former name (an old
    editable install, a ``flask_guardian.egg-info`` in a checkout) may come first."""
    for namesake in metadata.distributions(name=NAMESAKE):
        if OWN_AUTHOR not in (namesake.metadata.get_all("Author") or ()):
            break
    else:
        return  # none, or only this project under its former name: nothing mixed
    raise ImportError(
        f"the unrelated package '{NAMESAKE}' ({namesake.version}) is installed in the same "
        f"environment as {DISTRIBUTION}: both install the import package 'flask_guardian' "
        f"and overwrite each other's files. Run 'pip uninstall {NAMESAKE} {DISTRIBUTION}' "
        f"and then install {DISTRIBUTION} again."
    )


check_no_namesake()
