"""Property tests for LoRA (hypothesis, 200 cases each): merge then unmerge restores the weights,
and an adapter saved then loaded is bit-exact."""

import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from lorakit.adapters import load_adapter, save_adapter
from lorakit.lora import inject_lora, lora_layers, merge_lora, unmerge_lora

SETTINGS = settings(max_examples=200, deadline=None)

shapes = st.tuples(st.integers(1, 48), st.integers(1, 48))


def _model(m: int, n: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(m, n), nn.Tanh(), nn.Linear(n, m, bias=False))


def _randomize_B(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=gen))


@SETTINGS
@given(shapes, st.data(), st.floats(0.1, 64.0), st.booleans(), st.integers(0, 2**16))
def test_merge_then_unmerge_restores_the_weights(shape, data, alpha, rslora, seed):
    m, n = shape
    r = data.draw(st.integers(1, min(m, n)))
    model = _model(m, n, seed)
    W0 = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    inject_lora(model, ["0", "2"], r=r, alpha=alpha, rslora=rslora)
    _randomize_B(model, seed)
    x = torch.randn(3, m, generator=torch.Generator().manual_seed(seed))
    y_unmerged = model(x)
    merge_lora(model)
    # float32 rounds relative to the size of what is summed, so the tolerance scales with the output:
    # an output element near 0 is still a sum of terms as large as the largest output
    size = max(1.0, y_unmerged.abs().max().item())
    torch.testing.assert_close(model(x), y_unmerged, atol=1e-5 * size, rtol=1e-4)
    unmerge_lora(model)
    for layer, w in zip(lora_layers(model).values(), W0):
        scale = max(
            1.0, layer.scaling * layer.A.abs().max().item() * layer.B.abs().max().item() * r
        )
        assert (layer.base.weight - w).abs().max().item() <= 1e-5 * scale


@SETTINGS
@given(shapes, st.data(), st.floats(0.1, 64.0), st.booleans(), st.integers(0, 2**16))
def test_save_then_load_is_bit_exact(shape, data, alpha, rslora, seed):
    m, n = shape
    r = data.draw(st.integers(1, min(m, n)))
    model = _model(m, n, seed)
    inject_lora(model, ["0", "2"], r=r, alpha=alpha, rslora=rslora)
    _randomize_B(model, seed)
    fresh = _model(m, n, seed + 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "adapter.safetensors"
        save_adapter(model, path)
        load_adapter(fresh, path)
    for (name, a), (_, b) in zip(lora_layers(model).items(), lora_layers(fresh).items()):
        assert torch.equal(a.A, b.A) and torch.equal(a.B, b.B), name
        assert a.config == b.config
