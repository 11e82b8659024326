import dataclasses
import json

import pytest

import refsim
from refsim.spec import PRESET_SOURCES, PRESETS, NumericsSpec


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name):
    spec = refsim.preset(name)
    d = json.loads(json.dumps(spec.to_dict()))
    assert NumericsSpec.from_dict(d) == spec
    assert set(d) == {f.name for f in dataclasses.fields(NumericsSpec)} | {"spec_schema_version"}
    assert name in PRESET_SOURCES


def test_presets_cover_the_design_list():
    assert set(PRESETS) == {"onnx", "torch", "torch_per_channel", "gptq", "rptq", "qrazor", "tflite", "torchao",
                            "compressed_tensors", "onnxruntime", "onnxruntime_dynamic_int8", "qonnx", "ml_dtypes"}


def test_presets_differ_where_their_sources_do():
    assert refsim.preset("onnx").scale_op.value == "div"
    assert refsim.preset("torch").scale_op.value == "mul_recip"
    assert refsim.preset("rptq").compute_dtype.value == "float16"
    assert refsim.preset("tflite").rounding.value == "ties_away"
    assert refsim.preset("tflite").requant.value == "double_rounding"
    assert refsim.preset("gptq").signed is False


def test_spec_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        refsim.preset("onnx").rounding = "floor"


def test_from_dict_refuses_missing_and_unknown_fields():
    d = refsim.preset("onnx").to_dict()
    del d["rounding"]
    with pytest.raises(ValueError, match="missing fields \\['rounding'\\]"):
        NumericsSpec.from_dict(d)
    d = refsim.preset("onnx").to_dict()
    d["colour"] = "blue"
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        NumericsSpec.from_dict(d)
    d = refsim.preset("onnx").to_dict()
    d["spec_schema_version"] = 99
    with pytest.raises(ValueError, match="spec_schema_version"):
        NumericsSpec.from_dict(d)


def test_bad_knob_values_name_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match="rounding='nearest'.*'ties_even'"):
        refsim.preset("onnx").replace(rounding="nearest")
    with pytest.raises(ValueError, match="acc_bits"):
        refsim.preset("onnx").replace(acc_bits=65)
    with pytest.raises(ValueError, match="before_round_fused.*needs scale_op='mul_recip'"):
        refsim.preset("onnx").replace(zero_point_stage="before_round_fused")
    with pytest.raises(ValueError, match="preset name='bogus'.*onnx"):
        refsim.preset("bogus")
