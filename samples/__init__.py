"""The built-in sample project, in the import format of :mod:`db.projects`.

``sample_project.json`` describes a small team building a recipe-sharing web app: 62
tasks whose dependencies plan into groups and pipelines (13 batches at batch size 5).
Load it with ``LOAD_SAMPLE`` or import it like any other project file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The sample project file, shipped as package data beside this module.
SAMPLE_PROJECT_PATH: Path = Path(__file__).with_name("sample_project.json")


def load_sample() -> dict[str, Any]:
    """Return the sample project as decoded JSON (a fresh dict on every call)."""
    return json.loads(SAMPLE_PROJECT_PATH.read_text(encoding="utf-8"))
