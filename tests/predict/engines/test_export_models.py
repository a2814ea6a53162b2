"""Every registered model through ONNX export, ONNX Runtime and OpenVINO, against PyTorch fp32.

The exported engines run the model with its BatchNorm layers folded followed by its
sigmoid/softmax (:class:`~geochange.predict.engines.base.ProbabilityModel`); the reference is
the unfolded PyTorch model in fp32 with the same head, so folding, export and both runtimes
are checked together, for binary and semantic models alike.
"""

from __future__ import annotations

import pytest
import torch

from geochange.models import SEMANTIC_MODELS, build_model, list_models
from geochange.predict.engines import create_engine, to_probabilities
from tests.models.test_models import NUM_CLASSES, _small
from tests.predict.engines.conftest import ENGINE_PARAMS

#: Collected before any test registers its own models, so these are the library's models.
MODELS = list_models()
#: Models whose export takes over 20 s on a 2-core CPU: none at these small configs (ONNX
#: export 0.5-2.5 s, export + OpenVINO compile 3-4 s per model on a loaded 2-core AMD EPYC).
SLOW_EXPORT: frozenset[str] = frozenset()
EXPORTED = [engine for engine in ENGINE_PARAMS if engine.values[0] != "torch"]
ATOL = 1e-4
SIZE = 64


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = _small(name)
    if name in SEMANTIC_MODELS:
        kwargs["num_classes"] = NUM_CLASSES
    model = build_model(name, **kwargs)  # type: ignore[arg-type]
    # BatchNorm statistics of a real batch (not the init's 0/1), so folding is exercised.
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)))
    return model.eval()


@pytest.mark.parametrize("engine", EXPORTED)
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORT else n for n in MODELS],
)
def test_exported_model_matches_torch_fp32(name: str, engine: str, tmp_path) -> None:
    model = _model(name)
    x = torch.randn(2, 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = to_probabilities(model(x))
    runner = create_engine(
        engine,
        model,
        device=torch.device("cpu"),
        precision="fp32",
        batch_size=2,
        cache_dir=tmp_path,
    )
    out = runner.run(x)
    channels = 1 + 2 * NUM_CLASSES if name in SEMANTIC_MODELS else 1
    assert out.shape == (2, channels, SIZE, SIZE) == reference.shape
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    # Random-init outputs vary little around their mean (tinycd's change probabilities span
    # ~3e-4), so atol alone could pass a constant: the error must also be small next to the
    # spread of the outputs.
    spread = float(reference.amax() - reference.amin())
    assert spread > 0 and float((out - reference).abs().max()) <= 0.01 * spread
