"""The model store on its own: versions, names, validation, atomicity, cleanup."""

from __future__ import annotations

import io
import os
import threading
import time

import onnx
import pytest

from rootstream.metadata import METADATA_KEY, ModelSpec
from serving.errors import (
    InvalidModelError,
    InvalidNameError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from serving.store import ModelStore


def test_concurrent_uploads_get_distinct_consecutive_versions(tmp_path, mlp):
    store = ModelStore(tmp_path)
    payload = mlp.path.read_bytes()
    versions: list[int] = []
    threads = [
        threading.Thread(target=lambda: versions.append(store.add("m", io.BytesIO(payload))))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(1, 9))
    assert store.versions("m") == list(range(1, 9))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(map(str, range(1, 9)))


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a b", "é", "x" * 65, "a\x00"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(InvalidNameError, match="invalid model name"):
        ModelStore(tmp_path).add(name, io.BytesIO(b"x"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["higgs", "HZZ_v2.onnx-model", "x" * 64, "0"])
def test_allowed_names(tmp_path, mlp, name):
    store = ModelStore(tmp_path)
    assert store.add(name, io.BytesIO(mlp.path.read_bytes())) == 1
    assert store.names() == [name]


def test_oversize_upload_is_refused_and_leaves_nothing(tmp_path, mlp):
    payload = mlp.path.read_bytes()
    store = ModelStore(tmp_path, max_bytes=len(payload) - 1)
    with pytest.raises(PayloadTooLargeError, match=f"limit of {len(payload) - 1} bytes"):
        store.add("m", io.BytesIO(payload))
    assert list(tmp_path.iterdir()) == []
    assert ModelStore(tmp_path, max_bytes=len(payload)).add("m", io.BytesIO(payload)) == 1


def test_metadata_naming_missing_inputs_is_refused(tmp_path, mlp):
    proto = onnx.load(str(mlp.path))
    spec = ModelSpec.from_metadata({p.key: p.value for p in proto.metadata_props})
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = spec.to_json().replace('"inputs": ["x"]', '"inputs": ["features"]')
    with pytest.raises(InvalidModelError, match=r"names inputs \['features'\] that the graph"):
        ModelStore(tmp_path).add("m", io.BytesIO(proto.SerializeToString()))


def test_unreadable_metadata_is_refused(tmp_path, mlp):
    proto = onnx.load(str(mlp.path))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = "{not json"
    with pytest.raises(InvalidModelError, match="unreadable rootstream metadata"):
        ModelStore(tmp_path).add("m", io.BytesIO(proto.SerializeToString()))


def test_versions_follow_triton_rules(tmp_path, mlp):
    store = ModelStore(tmp_path)
    store.add("m", io.BytesIO(mlp.path.read_bytes()))
    for ignored in ("01", "0", "abc", ".upload-x", "-3"):
        (tmp_path / "m" / ignored).mkdir()
    assert store.versions("m") == [1]
    assert store.get("m").version == 1


def test_delete_versions_then_model(tmp_path, mlp):
    store = ModelStore(tmp_path)
    for _ in range(3):
        store.add("m", io.BytesIO(mlp.path.read_bytes()))
    assert store.delete("m", 3) == [3]
    assert store.get("m").version == 2
    assert store.add("m", io.BytesIO(mlp.path.read_bytes())) == 3  # Triton: highest + 1
    with pytest.raises(ModelNotFoundError, match=r"has no version 7 \(it has \[1, 2, 3\]\)"):
        store.delete("m", 7)
    assert store.delete("m") == [1, 2, 3]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelNotFoundError, match="no model 'm'"):
        store.get("m")


def test_deleting_the_last_version_removes_the_model(tmp_path, mlp):
    store = ModelStore(tmp_path)
    store.add("m", io.BytesIO(mlp.path.read_bytes()))
    store.delete("m", 1)
    assert store.names() == []
    assert list(tmp_path.iterdir()) == []


def test_clean_removes_leftovers_only(tmp_path, mlp):
    store = ModelStore(tmp_path)
    store.add("m", io.BytesIO(mlp.path.read_bytes()))
    (tmp_path / "m" / ".upload-1234").mkdir()
    (tmp_path / "m" / ".upload-1234" / "model.onnx").write_bytes(b"half")
    (tmp_path / "m" / ".deleted-2-abcd").mkdir()
    (tmp_path / ".deleted-old-abcd").mkdir()
    (tmp_path / "empty").mkdir()
    store.clean()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def test_every_store_sees_configs_written_or_reloaded_through_another(tmp_path, mlp):
    writer, reader = ModelStore(tmp_path), ModelStore(tmp_path)  # two server processes
    writer.add("m", io.BytesIO(mlp.path.read_bytes()))
    writer.write_config("m", "max_batch_size: 8\n")
    settled = time.time() - 10  # a directory quiet for long: its listing is reused
    os.utime(tmp_path / "m", (settled, settled))
    first = reader.get("m").config
    assert first == reader.config_file("m")
    assert first is not None
    assert not reader.get("m").unloaded

    (tmp_path / "m" / "config.pbtxt").write_text("max_batch_size: 16\n")  # in place
    os.utime(tmp_path / "m", (settled, settled))
    assert reader.get("m").config == first  # the directory did not change
    writer.reload("m")
    assert reader.get("m").config.identity != first.identity

    writer.write_config("m", "max_batch_size: 4\n")
    writer.set_unloaded("m", True)
    listed = reader.get("m")
    assert listed.unloaded
    assert reader.is_unloaded("m")
    assert (tmp_path / "m" / "config.pbtxt").stat().st_ino == listed.config.identity[0]
