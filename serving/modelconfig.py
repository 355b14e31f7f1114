"""Triton model configurations (``<name>/config.pbtxt``): parse, check against the model, derive.

Protobuf and Triton's ``ModelConfig`` message (tritonclient's generated
``model_config_pb2``), no onnxruntime; only :func:`read_config` touches a file. A
configuration is parsed from Triton's text format (the file) or JSON (the v2 repository
load's ``parameters.config``), checked against the ONNX model it configures, and
completed as Triton's auto-complete does: name, platform, the inputs and outputs it leaves
out (from the model), one CPU instance. A model without a file gets the configuration
:func:`derive_config` makes from the model alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from serving.batcher import BatchSettings
from serving.datatypes import ONNX_DATATYPES
from serving.errors import InvalidConfigError

if TYPE_CHECKING:
    from serving.runtime import TensorInfo

__all__ = [
    "BACKEND",
    "DERIVED_MAX_BATCH_SIZE",
    "PLATFORM",
    "batch_settings",
    "complete_config",
    "config_as_dict",
    "config_as_text",
    "derive_config",
    "parse_json",
    "parse_text",
    "read_config",
]

PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
DERIVED_MAX_BATCH_SIZE = 1024
"""``max_batch_size`` of a derived configuration: the request size it suggests to clients
that size requests from it (coffea); a model without ``config.pbtxt`` takes any size."""

# the fields a configuration may set, per message; any other is refused by name
SUPPORTED = {
    "ModelConfig": (
        "name",
        "platform",
        "backend",
        "max_batch_size",
        "input",
        "output",
        "dynamic_batching",
        "instance_group",
    ),
    "ModelInput": ("name", "data_type", "dims"),
    "ModelOutput": ("name", "data_type", "dims"),
    "ModelDynamicBatching": ("preferred_batch_size", "max_queue_delay_microseconds"),
    "ModelInstanceGroup": ("name", "count", "kind"),
}
CPU_KINDS = (pb.ModelInstanceGroup.KIND_AUTO, pb.ModelInstanceGroup.KIND_CPU)
_INT64 = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


# ----------------------------------------------------------------- reading and writing
def parse_text(text: str, source: str) -> pb.ModelConfig:
    """A configuration in Triton's text format; ``source`` (a file) names it in errors."""
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as err:
        raise InvalidConfigError(f"{source}: {err}") from None


def read_config(path: str) -> pb.ModelConfig:
    """The configuration in the file at ``path`` (``config.pbtxt``)."""
    try:
        with open(path, encoding="utf-8") as file:
            return parse_text(file.read(), path)
    except UnicodeDecodeError as err:
        raise InvalidConfigError(f"{path}: not UTF-8 text ({err})") from None


def parse_json(text: str, source: str) -> pb.ModelConfig:
    """A configuration as JSON (field names as in the text format or in lowerCamelCase)."""
    try:
        return json_format.Parse(text, pb.ModelConfig())
    except json_format.ParseError as err:
        raise InvalidConfigError(f"{source}: {err}") from None


def config_as_text(config: pb.ModelConfig) -> str:
    """Triton's text format, as ``config.pbtxt`` holds it."""
    return text_format.MessageToString(config)


def config_as_dict(config: pb.ModelConfig) -> dict[str, Any]:
    """Every field as JSON values (as Triton's REST API prints it), 64-bit integers as numbers."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _int64_as_numbers(config.DESCRIPTOR, data)


def _int64_as_numbers(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        value = data.get(field.name)
        if value is None:
            continue
        if field.type in _INT64:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in value if isinstance(value, list) else [value]:
                _int64_as_numbers(field.message_type, item)
    return data


# ----------------------------------------------------------------- checking and completing
def derive_config(
    name: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> pb.ModelConfig:
    """The configuration of a model without ``config.pbtxt``, from its signature alone.

    ``max_batch_size`` is :data:`DERIVED_MAX_BATCH_SIZE` when every input and output has a
    dynamic first axis (then ``dims`` leave it out), else 0 (``dims`` are whole shapes).
    """
    batchable = all(t.shape[:1] == (None,) for t in [*inputs, *outputs])
    config = pb.ModelConfig(max_batch_size=DERIVED_MAX_BATCH_SIZE if batchable else 0)
    return complete_config(config, name, inputs, outputs, source="the derived configuration")


def complete_config(
    config: pb.ModelConfig,
    name: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    *,
    source: str,
) -> pb.ModelConfig:
    """Check a configuration against its model and complete it (a new message).

    Args:
        config: as parsed.
        name: the model's name (its directory).
        inputs, outputs: the model's signature.
        source: the file or field the configuration came from, for errors.

    Raises:
        InvalidConfigError: an unsupported field, or one the model contradicts; the
            message names ``source`` and the field.
    """
    _check_supported(config, source)
    _check_identity(config, name, source)
    _check_batching(config, inputs, outputs, source)
    _check_instances(config, source)
    done = pb.ModelConfig()
    done.CopyFrom(config)
    done.name, done.platform, done.backend = name, PLATFORM, BACKEND
    batched = config.max_batch_size > 0
    _complete_tensors(done.input, inputs, batched, f"{source}: input")
    _complete_tensors(done.output, outputs, batched, f"{source}: output")
    if done.HasField("dynamic_batching") and not done.dynamic_batching.preferred_batch_size:
        done.dynamic_batching.preferred_batch_size.append(done.max_batch_size)
    if not done.instance_group:
        done.instance_group.add()
    for group in done.instance_group:
        group.count, group.kind = group.count or 1, pb.ModelInstanceGroup.KIND_CPU
    return done


def batch_settings(config: pb.ModelConfig) -> BatchSettings | None:
    """How a completed configuration batches requests; None without ``dynamic_batching``.

    Each instance of every ``instance_group`` runs one batch at a time.
    """
    if not config.HasField("dynamic_batching"):
        return None
    batching = config.dynamic_batching
    return BatchSettings(
        max_batch_size=config.max_batch_size,
        preferred_batch_size=tuple(batching.preferred_batch_size),
        max_queue_delay=batching.max_queue_delay_microseconds / 1e6,
        instances=sum(group.count for group in config.instance_group) or 1,
    )


def _check_supported(message: Message, source: str, path: str = "") -> None:
    allowed = SUPPORTED[message.DESCRIPTOR.name]
    for field, value in message.ListFields():
        where = f"{path}{field.name}"
        if field.name not in allowed:
            raise InvalidConfigError(
                f"{source}: field {where!r} is not supported by rootstream-serve "
                f"(supported here: {', '.join(allowed)})"
            )
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            _check_supported(value, source, f"{where}.")
        else:
            for index, item in enumerate(value):
                _check_supported(item, source, f"{where}[{index}].")


def _check_identity(config: pb.ModelConfig, name: str, source: str) -> None:
    if config.name and config.name != name:
        raise InvalidConfigError(
            f"{source}: name {config.name!r} differs from the model's name {name!r}"
        )
    if config.platform not in ("", PLATFORM) or config.backend not in ("", BACKEND):
        raise InvalidConfigError(
            f"{source}: platform {config.platform!r} / backend {config.backend!r}: "
            f"rootstream-serve runs ONNX models (platform {PLATFORM!r}, backend {BACKEND!r})"
        )


def _check_batching(
    config: pb.ModelConfig,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    source: str,
) -> None:
    largest = config.max_batch_size
    if largest < 0:
        raise InvalidConfigError(f"{source}: max_batch_size is {largest}; it must be >= 0")
    if largest > 0:
        for kind, tensors in (("input", inputs), ("output", outputs)):
            for info in tensors:
                if info.shape[:1] != (None,):
                    raise InvalidConfigError(
                        f"{source}: max_batch_size {largest} needs a dynamic first (batch) "
                        f"axis, but the model's {kind} {info.name!r} has shape "
                        f"{_model_dims(info)} (use max_batch_size: 0)"
                    )
    if not config.HasField("dynamic_batching"):
        return
    if largest == 0:
        raise InvalidConfigError(f"{source}: dynamic_batching needs max_batch_size > 0")
    for index, size in enumerate(config.dynamic_batching.preferred_batch_size):
        if not 1 <= size <= largest:
            raise InvalidConfigError(
                f"{source}: dynamic_batching.preferred_batch_size[{index}] is {size}; it "
                f"must be from 1 to max_batch_size ({largest})"
            )


def _check_instances(config: pb.ModelConfig, source: str) -> None:
    for index, group in enumerate(config.instance_group):
        if group.count < 0:
            raise InvalidConfigError(
                f"{source}: instance_group[{index}].count is {group.count}; it must be >= 1"
            )
        if group.kind not in CPU_KINDS:
            kind = pb.ModelInstanceGroup.Kind.Name(group.kind)
            raise InvalidConfigError(
                f"{source}: instance_group[{index}].kind is {kind}; rootstream-serve runs "
                "models on the CPU (use KIND_CPU, or leave kind out)"
            )


def _complete_tensors(
    listed: Any, model_tensors: Sequence[TensorInfo], batched: bool, field: str
) -> None:
    """Check the listed inputs (or outputs) against the model's, then add the missing ones."""
    by_name = {info.name: info for info in model_tensors}
    seen: set[str] = set()
    for index, tensor in enumerate(listed):
        at = f"{field}[{index}] {tensor.name!r}"
        info = by_name.get(tensor.name)
        if info is None or tensor.name in seen:
            problem = "is listed twice" if info else f"is not the model's (it has {list(by_name)})"
            raise InvalidConfigError(f"{at} {problem}")
        seen.add(tensor.name)
        if tensor.data_type != _data_type(info):
            given, wanted = (pb.DataType.Name(t) for t in (tensor.data_type, _data_type(info)))
            raise InvalidConfigError(f"{at}: data_type {given} differs from the model's {wanted}")
        shape = ([-1] if batched else []) + list(tensor.dims)
        if shape != _model_dims(info):
            raise InvalidConfigError(
                f"{at}: dims {list(tensor.dims)} make the shape {shape} (the batch axis "
                f"first when max_batch_size > 0); the model's is {_model_dims(info)}"
            )
    for info in model_tensors:
        if info.name not in seen:
            dims = _model_dims(info)[1:] if batched else _model_dims(info)
            listed.add(name=info.name, data_type=_data_type(info), dims=dims)


def _model_dims(info: TensorInfo) -> list[int]:
    return [-1 if d is None else d for d in info.shape]


def _data_type(info: TensorInfo) -> int:
    datatype = ONNX_DATATYPES.get(info.type)
    if datatype is None:
        return pb.TYPE_INVALID
    return pb.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
