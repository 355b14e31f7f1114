"""The model store: a directory in Triton's model-repository layout.

::

    <root>/<name>/<version>/model.onnx      versions 1, 2, ...; the highest serves by default
    <root>/<name>/config.pbtxt              its Triton model configuration (optional)
    <root>/<name>/.unloaded                 present while the model is unloaded (KServe v2)

Every change is atomic. An upload is written, flushed and validated in a hidden staging
directory inside its model directory (``<name>/.upload-*``, which Triton ignores as it
is no version number), then renamed to its version number in one step; a deletion
renames the version (or the model) out of sight before removing it. A crash therefore
leaves the old state or the new one, plus hidden leftovers that :meth:`ModelStore.clean`
removes. Every lookup checks the model directory (one ``stat``, and a ``scandir`` when
it changed), so each server process sees the uploads and deletions of all others at once;
the listing also gives the model's ``config.pbtxt`` and unloaded state, so a request needs
no other look at the disk. A ``config.pbtxt`` rewritten in place (which leaves the
directory as it was) is seen once the model is loaded again (:meth:`ModelStore.reload`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from rootstream.errors import ModelSpecError, close_matches
from rootstream.metadata import ModelSpec
from serving.config import DEFAULT_MAX_UPLOAD_BYTES
from serving.errors import (
    ConflictError,
    InvalidModelError,
    InvalidNameError,
    ModelNotFoundError,
    PayloadTooLargeError,
)

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "ConfigFile",
    "ModelFile",
    "ModelStore",
    "validate_name",
    "validate_onnx",
]

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
VERSION = re.compile(r"[1-9][0-9]{0,17}")
_CHUNK = 1 << 20
_STAGING = ".upload-"
_TRASH = ".deleted-"
UNLOADED = ".unloaded"  # marker file in a model directory: the model is unloaded
_SETTLED_NS = 1_000_000_000


class ConfigFile(NamedTuple):
    """A model's stored configuration; ``identity`` (inode, mtime, size) is new for every write."""

    path: str
    identity: tuple[int, int, int]


class ModelFile(NamedTuple):
    """One stored version as listed; ``identity`` (inode, mtime of its directory) is new for
    every upload. ``config`` and ``unloaded`` are its model's at the listing."""

    name: str
    version: int
    path: str
    identity: tuple[int, int]
    config: ConfigFile | None = None
    unloaded: bool = False


class _Listing(NamedTuple):
    """A model directory as listed: its versions in ascending order, its ``config.pbtxt``,
    and whether the model is unloaded."""

    versions: dict[int, ModelFile]
    config: ConfigFile | None
    unloaded: bool


_NO_LISTING = _Listing({}, None, False)


def validate_name(name: str) -> None:
    """Raise :class:`InvalidNameError` unless ``name`` is a safe model name."""
    if not NAME.fullmatch(name) or name.startswith("."):
        raise InvalidNameError(
            f"invalid model name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
            "not starting with '.'"
        )


class ModelStore:
    """Model versions in ``root``, written atomically and validated on upload.

    Args:
        root: the model repository (created if missing).
        max_bytes: the largest ONNX file accepted.
    """

    def __init__(
        self, root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = os.fspath(self.root)
        self.max_bytes = max_bytes
        self._listings: dict[str, tuple[tuple[int, int], _Listing]] = {}

    # ----------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """The models that have at least one version, sorted."""
        with os.scandir(self.root) as entries:
            candidates = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
        return sorted(n for n in candidates if NAME.fullmatch(n) and self._listing(n).versions)

    def versions(self, name: str) -> list[int]:
        """The versions of a model, ascending; empty when there is no such model."""
        validate_name(name)
        return list(self._listing(name).versions)

    def _listing(self, name: str) -> _Listing:
        """The model's directory, listed again when it changed.

        A listing is reused while the directory's (inode, mtime) stay the same, and only
        once the directory has been quiet for a second: a change within the same clock
        tick as the listing would leave its mtime unchanged.
        """
        path = f"{self._root}{os.sep}{name}"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return _NO_LISTING
        key = (st.st_ino, st.st_mtime_ns)
        cached = self._listings.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        versions, config, unloaded = {}, None, False
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if VERSION.fullmatch(entry.name):
                        info = entry.stat()
                        versions[int(entry.name)] = (entry.path, (info.st_ino, info.st_mtime_ns))
                    elif entry.name == CONFIG_FILE:
                        info = entry.stat()
                        identity = (info.st_ino, info.st_mtime_ns, info.st_size)
                        config = ConfigFile(entry.path, identity)
                    elif entry.name == UNLOADED:
                        unloaded = True
        except (FileNotFoundError, NotADirectoryError):
            return _NO_LISTING
        files = {
            version: ModelFile(
                name, version, os.path.join(directory, MODEL_FILE), identity, config, unloaded
            )
            for version, (directory, identity) in sorted(versions.items())
        }
        listing = _Listing(files, config, unloaded)
        if time.time_ns() - st.st_mtime_ns > _SETTLED_NS:
            self._listings[name] = (key, listing)
        return listing

    def get(self, name: str, version: int | None = None) -> ModelFile:
        """A model version (the latest when ``version`` is None).

        Raises:
            ModelNotFoundError: no such model or version; the message lists what exists.
        """
        if name not in self._listings:  # names listed before were valid
            validate_name(name)
        listing = self._listing(name).versions
        if not listing:
            raise ModelNotFoundError(f"no model {name!r} ({close_matches(name, self.names())})")
        if version is None:
            return listing[next(reversed(listing))]
        if version not in listing:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} (it has {list(listing)})"
            )
        return listing[version]

    def is_unloaded(self, name: str) -> bool:
        """Whether the model was unloaded (Open Inference Protocol); its files stay."""
        return self._listing(name).unloaded

    def set_unloaded(self, name: str, unloaded: bool) -> None:
        """Mark an existing model unloaded (a marker file all processes see) or loaded."""
        self.get(name)
        marker = self.root / name / UNLOADED
        if unloaded:
            marker.touch()
        else:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()

    def config_file(self, name: str) -> ConfigFile | None:
        """The model's ``config.pbtxt``, or None when it has none."""
        return self._listing(name).config

    def reload(self, name: str) -> None:
        """Have every process list the model's directory again, and so read its
        ``config.pbtxt`` afresh, even one rewritten in place: its mtime becomes now."""
        self.get(name)
        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile: nothing to reload
            os.utime(f"{self._root}{os.sep}{name}")

    # ----------------------------------------------------------------- writing
    def write_config(self, name: str, text: str) -> None:
        """Store an existing model's ``config.pbtxt`` (atomically: written aside, renamed)."""
        self.get(name)
        model_dir = self.root / name
        staging = model_dir / f"{_STAGING}{uuid.uuid4().hex}"
        try:
            with open(staging, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, model_dir / CONFIG_FILE)
        except FileNotFoundError:
            raise ConflictError(f"model {name!r} was deleted meanwhile; retry") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
        _fsync_dir(model_dir)

    def add(
        self, name: str, stream: BinaryIO, *, check: Callable[[Path], None] | None = None
    ) -> int:
        """Store the ONNX bytes read from ``stream`` as the model's next version.

        The file is validated (:func:`validate_onnx`, then ``check(path)`` if given)
        before it becomes visible, all at once, under its version number.

        Returns:
            The new version number.

        Raises:
            InvalidNameError, PayloadTooLargeError, InvalidModelError: as their names say.
        """
        validate_name(name)
        model_dir = self.root / name
        staging = self._staging_dir(model_dir)
        try:
            target = staging / MODEL_FILE
            self._receive(stream, target)
            validate_onnx(target)
            if check is not None:
                check(target)
            return self._commit(model_dir, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # a failed first upload leaves no empty model
                model_dir.rmdir()  # (fails, as it should, when the model has versions)

    def _staging_dir(self, model_dir: Path) -> Path:
        staging = model_dir / f"{_STAGING}{uuid.uuid4().hex}"
        for _ in range(3):  # a concurrent delete may remove the model directory in between
            model_dir.mkdir(exist_ok=True)
            try:
                staging.mkdir()
                return staging
            except FileNotFoundError:
                continue
        raise ConflictError(f"model {model_dir.name!r} is being deleted; retry the upload")

    def _receive(self, stream: BinaryIO, target: Path) -> None:
        size = 0
        with open(target, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    raise PayloadTooLargeError(
                        f"the model exceeds the upload limit of {self.max_bytes} bytes"
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if size == 0:
            raise InvalidModelError(
                "the upload is empty: send the ONNX file as the request body "
                "(application/octet-stream) or as the multipart field 'file'"
            )

    def _commit(self, model_dir: Path, staging: Path) -> int:
        version = max(self._listing(model_dir.name).versions, default=0) + 1
        while True:
            try:
                os.rename(staging, model_dir / str(version))
            except FileNotFoundError:
                raise ConflictError(
                    f"model {model_dir.name!r} was deleted during the upload; retry it"
                ) from None
            except OSError as err:  # another upload took this number first
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    version += 1
                    continue
                raise
            _fsync_dir(model_dir)
            return version

    def delete(self, name: str, version: int | None = None) -> list[int]:
        """Delete one version, or the whole model when ``version`` is None.

        Returns:
            The versions deleted.
        """
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no model {name!r} ({close_matches(name, self.names())})")
        if version is None:
            source, trash, deleted = self.root / name, self.root / _trash_name(name), versions
        elif version in versions:
            source = self.root / name / str(version)
            trash, deleted = self.root / name / _trash_name(str(version)), [version]
        else:
            raise ModelNotFoundError(f"model {name!r} has no version {version} (it has {versions})")
        try:
            os.rename(source, trash)
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {name!r} was deleted meanwhile") from None
        shutil.rmtree(trash, ignore_errors=True)
        if version is not None and not self._listing(name).versions:
            for leftover in (UNLOADED, CONFIG_FILE):
                with contextlib.suppress(OSError):
                    os.unlink(self.root / name / leftover)
            with contextlib.suppress(OSError):  # not empty: an upload is in flight
                os.rmdir(self.root / name)
        return deleted

    def clean(self) -> None:
        """Remove what interrupted uploads and deletions left; call before serving starts."""
        for entry in os.scandir(self.root):
            if entry.name.startswith(_TRASH):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.is_dir() and not entry.name.startswith("."):
                for sub in os.scandir(entry.path):
                    if sub.name.startswith((_STAGING, _TRASH)):
                        _remove(sub)
                with contextlib.suppress(OSError):
                    os.rmdir(entry.path)  # only succeeds when empty


def validate_onnx(path: Path) -> None:
    """Raise :class:`InvalidModelError` unless ``path`` is a self-contained valid ONNX model.

    Checks: it parses, refers to no external data files, passes ``onnx.checker``, and its
    rootstream metadata (if any) is readable and names existing inputs.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise InvalidModelError(f"the upload is not an ONNX model: {err}") from None
    external = [t.name for t in _tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise InvalidModelError(
            f"the model refers to external data files (tensors {external[:5]}); upload one "
            "self-contained file (onnx.save(model, path, save_as_external_data=False))"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise InvalidModelError(f"onnx.checker rejects the model: {first}") from None
    try:
        spec = ModelSpec.from_metadata({p.key: p.value for p in model.metadata_props})
    except ModelSpecError as err:
        raise InvalidModelError(str(err)) from None
    graph_inputs = {i.name for i in model.graph.input}
    missing = [name for name in (spec.inputs if spec else ()) if name not in graph_inputs]
    if missing:
        raise InvalidModelError(
            f"the rootstream metadata names inputs {missing} that the graph lacks "
            f"(it has {sorted(graph_inputs)})"
        )


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor stored in a model: initializers and attributes, in all subgraphs."""
    graphs = [model.graph, *(f for f in model.functions)]
    while graphs:
        graph = graphs.pop()
        yield from getattr(graph, "initializer", ())
        for sparse in getattr(graph, "sparse_initializer", ()):
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def _remove(entry: os.DirEntry) -> None:
    """Remove a leftover: a staging directory, or a configuration written aside."""
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)


def _trash_name(name: str) -> str:
    return f"{_TRASH}{name}-{uuid.uuid4().hex}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
