"""Helpers for the suites that check the files under deploy/ with each ecosystem's own schema or tool."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"


def load_yaml_documents(path: Path) -> List[dict]:
    """Every non-empty YAML document in `path` (a `---`-separated stream)."""
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def validated_blocks(markdown: Path) -> Iterator[Tuple[str, str, int]]:
    """(type name, code, line) for every fenced block preceded by `<!-- validated-as: TYPE -->`."""
    lines = markdown.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"<!-- validated-as: (\S+) -->", lines[i].strip())
        if m:
            assert i + 1 < len(lines) and lines[i + 1].startswith("```"), (
                f"{markdown}:{i + 1}: a validated-as marker must sit right above a fenced block"
            )
            start = i + 2
            end = start
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            yield m.group(1), "\n".join(lines[start:end]) + "\n", start + 1
            i = end
        i += 1


def require_tool(name: str, hint: str) -> str:
    """The path of `name` on PATH (or /usr/sbin); else skips visibly (conftest fails it under AUTHZ_TEST_STRICT=1)."""
    found: Optional[str] = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None
    )
    if found is None:
        pytest.skip(f"{name} is not installed ({hint})")
    return found
