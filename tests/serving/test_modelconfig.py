"""Triton model configurations on their own: parsed, checked against a signature, completed."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from serving.errors import InvalidConfigError
from serving.modelconfig import (
    DERIVED_MAX_BATCH_SIZE,
    complete_config,
    config_as_dict,
    config_as_text,
    derive_config,
    parse_json,
    parse_text,
)
from serving.runtime import TensorInfo

SOURCE = "models/m/config.pbtxt"
INPUTS = [
    TensorInfo("x", (None, 8), "tensor(float)"),
    TensorInfo("mask", (None, 4), "tensor(bool)"),
]
OUTPUTS = [TensorInfo("output", (None,), "tensor(float)")]


def completed(text: str, inputs=INPUTS, outputs=OUTPUTS) -> pb.ModelConfig:
    return complete_config(parse_text(text, SOURCE), "m", inputs, outputs, source=SOURCE)


def test_a_full_configuration_is_completed_from_the_model():
    config = completed(
        """
        max_batch_size: 16
        input [{name: "x" data_type: TYPE_FP32 dims: [8]}]
        dynamic_batching {preferred_batch_size: [4, 8] max_queue_delay_microseconds: 500}
        instance_group [{count: 2 kind: KIND_CPU}]
        """
    )
    assert (config.name, config.platform, config.backend) == (
        "m",
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", pb.TYPE_FP32, [8]),
        ("mask", pb.TYPE_BOOL, [4]),  # left out: from the model
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("output", [])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, pb.ModelInstanceGroup.KIND_CPU)
    ]
    as_dict = config_as_dict(config)
    assert as_dict["input"][0]["dims"] == [8]  # int64 fields as numbers, not strings
    assert as_dict["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert parse_text(config_as_text(config), SOURCE) == config


def test_defaults_give_clients_a_batch_size():
    config = completed("max_batch_size: 32 dynamic_batching {}")
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, pb.ModelInstanceGroup.KIND_CPU)
    ]
    assert parse_json('{"maxBatchSize": 32, "dynamic_batching": {}}', "p") == parse_text(
        "max_batch_size: 32 dynamic_batching {}", SOURCE
    )


def test_derived_configurations():
    batched = derive_config("m", INPUTS, OUTPUTS)
    assert batched.max_batch_size == DERIVED_MAX_BATCH_SIZE
    assert not batched.HasField("dynamic_batching")
    assert [list(t.dims) for t in batched.input] == [[8], [4]]
    fixed = derive_config("m", [TensorInfo("x", (3, 8), "tensor(double)")], OUTPUTS)
    assert fixed.max_batch_size == 0
    assert [(t.data_type, list(t.dims)) for t in fixed.input] == [(pb.TYPE_FP64, [3, 8])]


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("max_bach_size: 8", 'no field named "max_bach_size"'),
        ("max_batch_size: eight", "max_batch_size: eight"),
        ("max_batch_size: -1", "max_batch_size is -1"),
        ("sequence_batching {}", "field 'sequence_batching' is not supported"),
        (
            'input [{name: "x" data_type: TYPE_FP32 dims: [-1, 8] format: FORMAT_NCHW}]',
            "input[0].format",
        ),
        (
            'input [{name: "y" data_type: TYPE_FP32 dims: [-1, 8]}]',
            "input[0] 'y' is not the model's",
        ),
        ('input [{name: "x" data_type: TYPE_FP64 dims: [-1, 8]}]', "data_type TYPE_FP64"),
        (
            'max_batch_size: 4 input [{name: "x" data_type: TYPE_FP32 dims: [7]}]',
            "input[0] 'x': dims [7]",
        ),
        (
            'output [{name: "output" data_type: TYPE_FP32 dims: [1]}]',
            "output[0] 'output': dims [1]",
        ),
        (
            "max_batch_size: 8 dynamic_batching {preferred_batch_size: [16]}",
            "preferred_batch_size[0] is 16",
        ),
        ("dynamic_batching {}", "dynamic_batching needs max_batch_size > 0"),
        (
            "max_batch_size: 8 instance_group [{kind: KIND_GPU}]",
            "instance_group[0].kind is KIND_GPU",
        ),
        ("max_batch_size: 8 instance_group [{count: -2}]", "instance_group[0].count is -2"),
        ('name: "other"', "name 'other' differs"),
        ('platform: "tensorflow_savedmodel"', "platform 'tensorflow_savedmodel'"),
    ],
)
def test_bad_configurations_name_the_file_and_field(text, names):
    with pytest.raises(InvalidConfigError) as info:
        completed(text)
    assert info.value.message.startswith(f"{SOURCE}: ")
    assert names in info.value.message


def test_a_batch_size_needs_a_batch_axis():
    with pytest.raises(InvalidConfigError, match="input 'x' has shape \\[3, 8\\]"):
        completed("max_batch_size: 2", inputs=[TensorInfo("x", (3, 8), "tensor(float)")])
