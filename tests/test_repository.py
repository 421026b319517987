"""The repository stands on its own: a clone holds every document its files point at."""

from __future__ import annotations

import re
import subprocess

from tests.helpers import REPO_ROOT

# A path of the machine the template was developed on, a notes folder beside it, or one of
# the notes kept there (numbered items of a list no clone has). This pattern is the one place
# those names are spelled, so that the test below can refuse them in every other file; it
# points at nothing, and a clone needs none of them.
MACHINE_PATH = re.compile(r"/work/|/shared/|\bPITFALLS\b|\bBLUEPRINT\b")
# A Markdown document named by a path relative to the repository root (docs/x.md, NOTES.md).
DOCUMENT = re.compile(r"(?<![\w/.-])((?:docs/)?[\w.-]+\.md)\b")
# The files that send a reader to a document: the README, CI, and the tests that need one.
POINTERS = ("README.md", ".ci/run", "tests/test_container.py")


def tracked_texts() -> dict[str, str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    )
    texts = {}
    for name in filter(None, listing.stdout.decode().split("\0")):
        path = REPO_ROOT / name
        if path.is_file():
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
    return texts


def test_no_file_points_at_a_path_or_document_outside_the_repository() -> None:
    found = {
        f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {match.group()}"
        for name, text in tracked_texts().items()
        for match in MACHINE_PATH.finditer(text)
        if name != "tests/test_repository.py"
    }
    assert sorted(found) == []


def test_every_document_the_readme_ci_and_container_tests_name_is_in_the_repository() -> None:
    texts = tracked_texts()
    named = {document for name in POINTERS for document in DOCUMENT.findall(texts[name])}
    assert "docs/containers.md" in named
    assert sorted(name for name in named if name not in texts) == []
