import pytest
import torch

from lorakit.model import GPT, GPTConfig, count_parameters, generate


def test_shapes_and_llama_module_names(tiny_cfg):
    model = GPT(tiny_cfg)
    x = torch.randint(0, 256, (3, tiny_cfg.context))
    logits, loss = model(x, x)
    assert logits.shape == (3, tiny_cfg.context, 256)
    assert loss.ndim == 0
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"}


def test_initial_loss_is_near_uniform(tiny_cfg):
    model = GPT(tiny_cfg)
    x = torch.randint(0, 256, (4, tiny_cfg.context))
    _, loss = model(x, x)
    assert abs(loss.item() - torch.log(torch.tensor(256.0)).item()) < 0.1


def test_causal_future_tokens_do_not_change_the_past(tiny_cfg):
    model = GPT(tiny_cfg).eval()
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 256
    a, _ = model(x)
    b, _ = model(y)
    torch.testing.assert_close(a[0, :10], b[0, :10])


def test_parameter_count_matches_formula(tiny_cfg):
    d, L, ctx, V = tiny_cfg.d_model, tiny_cfg.n_layer, tiny_cfg.context, 256
    per_block = 4 * d * d + 2 * 4 * d * d + 2 * 2 * d  # attention, MLP, two LayerNorms
    expected = V * d + ctx * d + L * per_block + 2 * d + d * V
    assert count_parameters(GPT(tiny_cfg)) == expected


def test_generate_is_deterministic(tiny_cfg):
    model = GPT(tiny_cfg)
    a = generate(model, "def ", max_new_tokens=20, seed=3)
    b = generate(model, "def ", max_new_tokens=20, seed=3)
    assert a == b and a.startswith("def ")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(context=0), "context must be a positive integer"),
        (dict(d_model=30, n_head=4), "divisible by n_head"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(n_layer=-1), "n_layer must be a positive integer"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kwargs)


def test_too_long_sequence(tiny_cfg):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        GPT(tiny_cfg)(torch.zeros(1, tiny_cfg.context + 1, dtype=torch.long))
