"""Write docs/api.md: every public name of rootstream and serving, and every command's help.

Signatures and the first paragraph of each docstring come from the code itself, so the
reference cannot drift: ``tests/test_api_reference.py`` fails when docs/api.md is stale.
Run from the repository root: ``.venv/bin/python tools/api_reference.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
from pathlib import Path

MODULES = [
    "rootstream",
    "rootstream.preprocess",
    "rootstream.metadata",
    "rootstream.client",
    "rootstream.config",
    "rootstream.train",
    "rootstream.evaluation",
    "rootstream.plots",
    "rootstream.synthetic",
    "rootstream.xrootd_server",
    "rootstream.errors",
    "serving",
]
COMMANDS = [
    ["rootstream"],
    ["rootstream", "stats"],
    ["rootstream", "inspect"],
    ["rootstream", "train"],
    ["rootstream", "bench"],
    ["rootstream-serve"],
]
OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def summary(obj: object) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def signature(obj: object) -> str:
    """The signature with its (string) annotations unquoted."""
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    text = re.sub(r"(?<=: )'([^']*)'", r"\1", text)
    return re.sub(r"-> '(.*)'$", r"-> \1", text)


def members(cls: type) -> list[str]:
    lines = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            lines.append(f"  - `.{name}` (property): {summary(value)}")
        elif isinstance(value, (staticmethod, classmethod)) or inspect.isfunction(value):
            function = value.__func__ if hasattr(value, "__func__") else value
            lines.append(f"  - `.{name}{signature(function)}`: {summary(function)}")
    return lines


def describe(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    lines = [f"## `{module_name}`", "", summary(module), ""]
    for name in sorted(getattr(module, "__all__", [])):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            lines.append(f"- class `{name}{signature(obj)}`: {summary(obj)}")
            lines += members(obj)
        elif callable(obj):
            lines.append(f"- `{name}{signature(obj)}`: {summary(obj)}")
        else:
            lines.append(f"- `{name}` = `{obj!r}`")
    return [*lines, ""]


def command_help(command: list[str]) -> list[str]:
    from rootstream.cli import main as rootstream_main
    from serving.cli import main as serve_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        if command[0] == "rootstream-serve":
            serve_main(["--help"])
        else:
            rootstream_main([*command[1:], "--help"])
    return [f"### `{' '.join(command)}`", "", "```", out.getvalue().rstrip(), "```", ""]


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal: make it fixed
    lines = [
        "# API reference",
        "",
        "Generated from the code by `tools/api_reference.py`; the HTTP routes are in",
        "[serving.md](serving.md) and [openapi.yaml](openapi.yaml).",
        "",
    ]
    for module in MODULES:
        lines += describe(module)
    lines += ["## Command line", ""]
    for command in COMMANDS:
        lines += command_help(command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
