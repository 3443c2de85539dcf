"""Every Python sample in docs/*.md and README.md runs.

The ```python blocks of one file run in order in one namespace (a later block may use the
app an earlier one built), in a temporary working directory. A block is skipped only when
the line before its fence is the visible marker ``<!-- no-test -->``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
SKIP_MARKER = "<!-- no-test -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[ \t]*$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of each ```python block not marked ``<!-- no-test -->``."""
    blocks: list[tuple[int, str]] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start, indent = index, match["indent"]
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((lines[i].strip() for i in range(start - 1, -1, -1)
                         if lines[i].strip()), "")
        if match["lang"] == "python" and previous != SKIP_MARKER:
            body = [line[len(indent):] if line.startswith(indent) else line
                    for line in lines[start + 1:end]]
            blocks.append((start + 1, "\n".join(body) + "\n"))
        index = end + 1
    return blocks


def test_every_document_is_found() -> None:
    names = {p.name for p in DOCUMENTS}
    assert {"index.md", "quickstart.md", "configuration.md", "strategies.md", "templates.md",
            "protection.md", "signals.md", "cli.md", "api.md", "README.md"} <= names


def test_the_extractor_honours_the_skip_marker(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        "```python\nx = 1\n```\n\n<!-- no-test -->\n```python\nraise SystemExit\n```\n"
        "```sh\nls\n```\n  ```python\n  y = 2\n  ```\n"
    )
    assert python_blocks(sample) == [(1, "x = 1\n"), (12, "y = 2\n")]


@pytest.mark.parametrize(
    "path", [p for p in DOCUMENTS if python_blocks(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_samples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(path)
    # Relative paths in samples (sqlite:///app.db, Flask's instance folder) land in tmp.
    monkeypatch.chdir(tmp_path)
    # A module name Python cannot import, so Flask(__name__) roots the app at the cwd.
    namespace: dict[str, Any] = {"__name__": "guardian_docs_sample"}
    for line, code in blocks:
        where = f"{path.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 (our own docs)
        except Exception as exc:
            raise AssertionError(f"the sample at {where} failed: {exc!r}") from exc
