"""docs/api.md is generated from the code: it must be current, and leave nothing undescribed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "api_reference", ROOT / "tools" / "api_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_current_and_complete():
    text = load_tool().render()
    assert text == (ROOT / "docs" / "api.md").read_text(), (
        "docs/api.md is stale: run .venv/bin/python tools/api_reference.py"
    )
    undescribed = re.findall(r"^\s*- .*`(?: \(property\))?: $", text, flags=re.M)
    assert not undescribed, f"public names without a docstring: {undescribed}"
