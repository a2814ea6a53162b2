"""Engine, device and precision choice; the error when an engine's package is missing."""

from __future__ import annotations

import sys

import pytest
import torch

import geochange.predict.engines.openvino_engine as ov_engine
from geochange.cli import build_parser
from geochange.errors import ConfigurationError, EngineUnavailableError
from geochange.predict import ChangePredictor
from geochange.predict.engines import resolve_engine
from tests.builders import TinyConvChange
from tests.predict.engines.conftest import _installed

needs_openvino = pytest.mark.skipif(not _installed("openvino"), reason="no openvino")
CPU = torch.device("cpu")


@needs_openvino
@pytest.mark.parametrize(
    ("capabilities", "requested", "expected"),
    [
        (["BF16", "FP32", "INT8"], "auto", "bf16"),  # AMX / AVX-512-bf16 CPUs
        (["FP32", "INT8"], "auto", "fp32"),
        (["BF16", "FP32", "INT8"], "fp32", "fp32"),
        (["BF16", "FP32", "INT8"], "bf16", "bf16"),
        (["BF16", "FP32", "INT8"], "int8", "int8"),
    ],
)
def test_openvino_precision_follows_the_cpu(monkeypatch, capabilities, requested, expected):
    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: capabilities)
    assert resolve_engine("openvino", "auto", requested) == (CPU, expected)


@needs_openvino
def test_openvino_refuses_what_the_cpu_or_device_cannot_run(monkeypatch) -> None:
    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(ConfigurationError, match=r"bf16.*capabilities"):
        resolve_engine("openvino", "cpu", "bf16")
    with pytest.raises(ConfigurationError, match="runs on the CPU"):
        resolve_engine("openvino", "cuda", "auto")


def test_precisions_other_engines_refuse() -> None:
    with pytest.raises(ConfigurationError, match=r"int8.*openvino"):
        resolve_engine("torch", "cpu", "int8")
    with pytest.raises(ConfigurationError, match="unknown engine 'tensorrt'"):
        ChangePredictor(TinyConvChange(), engine="tensorrt")  # type: ignore[arg-type]
    if _installed("onnxruntime"):
        with pytest.raises(ConfigurationError, match="fp32 only"):
            resolve_engine("onnxruntime", "cpu", "bf16")
        assert resolve_engine("onnxruntime", "cpu", "auto") == (CPU, "fp32")


@pytest.mark.parametrize(
    ("engine", "module", "extra"),
    [("openvino", "openvino", "openvino"), ("onnxruntime", "onnxruntime", "onnx")],
)
def test_a_missing_engine_package_names_the_pip_command(monkeypatch, engine, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(EngineUnavailableError, match=rf"pip install 'geochange\[{extra}\]'"):
        ChangePredictor(TinyConvChange(), engine=engine)


def test_cli_flags_reach_the_predictor(tmp_path) -> None:
    args = build_parser().parse_args(
        [
            "predict",
            "--checkpoint", "m.ckpt", "--pre", "a.tif", "--post", "b.tif", "--out-dir", "o",
            "--engine", "openvino", "--precision", "int8", "--calibration-tiles", "48",
            "--engine-cache-dir", str(tmp_path),
        ]
    )  # fmt: skip
    assert (args.engine, args.precision, args.calibration_tiles) == ("openvino", "int8", 48)
    assert args.engine_cache_dir == tmp_path
    defaults = build_parser().parse_args(
        ["predict", "--checkpoint", "m", "--pre", "a", "--post", "b", "--out-dir", "o"]
    )
    assert defaults.engine == "torch" and defaults.engine_cache_dir is None
