"""The configuration of ``rootstream train``: a YAML file and/or flags, checked on load.

:func:`load_config` merges a YAML mapping with overrides (the command's flags) into a frozen
:class:`TrainConfig`. Every key is checked: an unknown key or a value of the wrong type is a
:class:`ConfigError` that names the key, what it expects, and (for a typo) the nearest key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rootstream.chunks import DEFAULT_STEP_SIZE
from rootstream.errors import ConfigError, InvalidArgumentError, close_matches
from rootstream.options import ReadOptions
from rootstream.vocabulary import BALANCES, NORMALIZATIONS, TASKS

__all__ = ["TOKEN_VARIABLE", "TrainConfig", "load_config"]

TOKEN_VARIABLE = "ROOTSTREAM_SERVE_TOKEN"  # the token when none is given (rootstream-serve's too)
SECRETS = ("token",)  # kept out of checkpoints, reprs and error messages


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``rootstream train`` needs (see docs/workflow.md for each key)."""

    files: str | list[str] | dict[str, Any]
    model: str
    features: list[str] | None = None
    groups: dict[str, list[str]] | None = None
    tree: str = "Events"
    label: str | None = None
    weight: str | None = None
    cut: str | None = None
    reweight: dict[str, Any] | None = None
    balance: str | None = None
    task: str | None = None
    max_length: int | dict[str, int] | None = None
    normalize: str | None = "standard"
    inputs: list[str] | None = None
    validation: float = 0.2
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 1e-3
    workers: int = 0
    seed: int = 0
    step_size: int | str = DEFAULT_STEP_SIZE
    checkpoint_every: int = 100
    output: str = "train-output"
    upload: str | None = None
    token: str | None = field(default=None, repr=False)
    name: str | None = None

    @property
    def read_options(self) -> ReadOptions:
        """How the data is read: tree, label, weight, cut, reweighting, task, step size."""
        return ReadOptions.among(vars(self))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data without the token (what checkpoints record)."""
        return {k: v for k, v in asdict(self).items() if k not in SECRETS}

    @property
    def upload_token(self) -> str | None:
        """The bearer token of the upload: ``token``, else ``$ROOTSTREAM_SERVE_TOKEN``."""
        return self.token or os.environ.get(TOKEN_VARIABLE) or None

    @property
    def model_path(self) -> Path:
        """The model file of ``model: path/to/model.py:build``."""
        return Path(self.model.rpartition(":")[0] or self.model)

    @property
    def model_function(self) -> str:
        """The function of ``model: path/to/model.py:build`` (default ``build``)."""
        path, sep, function = self.model.rpartition(":")
        return function if sep and path else "build"


# ----------------------------------------------------------------- value checks
Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_str(s) for s in v)


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _files(v: Any) -> bool:
    if isinstance(v, Mapping):
        return bool(v) and all(
            _is_str(k) and isinstance(x, (int, float, str)) for k, x in v.items()
        )
    return _is_str(v) or _is_str_list(v)


def _groups(v: Any) -> bool:
    return (
        isinstance(v, Mapping)
        and bool(v)
        and all(_is_str(k) and _is_str_list(x) for k, x in v.items())
    )


def _max_length(v: Any) -> bool:
    if isinstance(v, Mapping):
        return all(_is_str(k) and _is_int(x) and x > 0 for k, x in v.items())
    return _is_int(v) and v > 0


def _model(v: Any) -> bool:
    return _is_str(v) and v.rpartition(":")[0 if ":" in v else 2].endswith(".py")


# key -> (check, what it expects)
RULES: dict[str, tuple[Check, str]] = {
    "files": (_files, "a path/URL/glob, a list of them, or a mapping {file: label}"),
    "model": (_model, "'path/to/model.py:function' (function default 'build')"),
    "features": (_optional(_is_str_list), "a list of branch names or expressions"),
    "groups": (_optional(_groups), "a mapping {group: [features]}"),
    "tree": (_is_str, "a tree name"),
    "label": (_optional(_is_str), "a branch name or expression"),
    "weight": (_optional(_is_str), "a branch name or expression"),
    "cut": (_optional(_is_str), "a selection expression"),
    "reweight": (
        _optional(lambda v: isinstance(v, Mapping)),
        "a mapping {variables: [...], bins: [[edges], ...], method: flat|ref, ...}",
    ),
    "balance": (_optional(lambda v: v in BALANCES), "'undersample', 'oversample' or null"),
    "task": (_optional(lambda v: v in TASKS), f"one of {list(TASKS)} (or omit: inferred)"),
    "max_length": (_optional(_max_length), "a positive int or a mapping {branch-or-glob: int}"),
    "normalize": (lambda v: v in NORMALIZATIONS, "'standard', 'minmax', 'robust' or null"),
    "inputs": (_optional(_is_str_list), "a list of batch arrays: x, mask, groups, <group>_mask"),
    "validation": (lambda v: _is_number(v) and 0 < v < 1, "a fraction between 0 and 1"),
    "epochs": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "batch_size": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "workers": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "seed": (_is_int, "an int"),
    "step_size": (lambda v: (_is_int(v) and v > 0) or _is_str(v), "entries (int) or '100 MB'"),
    "checkpoint_every": (lambda v: _is_int(v) and v > 0, "a positive int (steps)"),
    "output": (_is_str, "a directory"),
    "upload": (_optional(_is_str), "the URL of a rootstream-serve server"),
    "token": (_optional(_is_str), f"the server's bearer token (default ${TOKEN_VARIABLE})"),
    "name": (_optional(_is_str), "the model's name on the server"),
}
REQUIRED = ("files", "model")


def load_config(
    path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Read a YAML config (optional), apply ``overrides`` (None values are ignored), check it.

    Relative input paths of the YAML file (``files``, ``model``) are relative to the file's
    directory; those given as overrides, and ``output``, to the working directory.

    Raises:
        ConfigError: the file is not a YAML mapping, a key is unknown or missing, or a value
            has the wrong type; the message names the key and what it expects.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _resolve_inputs(_read_yaml(Path(path)), Path(path).parent)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return check_config(values, source=str(path) if path else "the options")


def check_config(values: Mapping[str, Any], *, source: str = "the config") -> TrainConfig:
    """A :class:`TrainConfig` from a plain mapping, every key checked."""
    for key in values:
        if key not in RULES:
            raise ConfigError(f"{source}: unknown key {key!r}; {close_matches(str(key), RULES)}")
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise ConfigError(f"{source}: missing key {missing[0]!r}: {RULES[missing[0]][1]}")
    for key, value in values.items():
        check, expected = RULES[key]
        if not check(value):
            shown = f"a {type(value).__name__}" if key in SECRETS else repr(value)
            raise ConfigError(f"{source}: key {key!r} must be {expected}, not {shown}")
    if values.get("features") is None and values.get("groups") is None:
        raise ConfigError(f"{source}: give 'features' (a list of branches) or 'groups'")
    if isinstance(values["files"], Mapping) and values.get("label") is not None:
        raise ConfigError(
            f"{source}: give labels in 'files' ({{file: label}}) or 'label', not both"
        )
    if not isinstance(values["files"], Mapping) and values.get("label") is None:
        raise ConfigError(
            f"{source}: no labels: make 'files' a mapping {{file: label}} or give 'label'"
        )
    try:
        ReadOptions.among(values)
    except InvalidArgumentError as err:
        raise ConfigError(f"{source}: {err}") from err
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: _copy(v) for k, v in values.items() if k in names})


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as err:
        raise ImportError("config files need PyYAML: pip install 'rootstream[train]'") from err

    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read the config {path}: {err}") from err
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of keys (files:, model:, ...)")
    return values


def _resolve_inputs(values: dict[str, Any], base: Path) -> dict[str, Any]:
    values = dict(values)
    files = values.get("files")
    if isinstance(files, str):
        values["files"] = _relative_to(files, base)
    elif isinstance(files, list):
        values["files"] = [_relative_to(f, base) if isinstance(f, str) else f for f in files]
    elif isinstance(files, Mapping):
        values["files"] = {
            _relative_to(k, base) if isinstance(k, str) else k: v for k, v in files.items()
        }
    if isinstance(values.get("model"), str):
        values["model"] = _relative_to(values["model"], base)
    return values


def _relative_to(spec: str, base: Path) -> str:
    if "://" in spec or os.path.isabs(spec) or not spec:
        return spec
    return str(base / spec)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
