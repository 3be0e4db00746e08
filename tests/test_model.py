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
        (dict(context=0), "context must be an integer >= 1"),
        (dict(d_model=30, n_head=4), "divisible by n_head"),
        (dict(dropout=1.0), "dropout must be a finite number >= 0.0 and < 1.0"),
        (dict(n_layer=-1), "n_layer must be an integer >= 1"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(n_layer=True), dict(d_model=32.0), dict(dropout="0.1")])
def test_a_config_of_the_wrong_type_is_a_type_error(kwargs):
    with pytest.raises(TypeError, match="GPTConfig"):
        GPTConfig(**kwargs)


def test_a_checkpointed_block_keeps_fewer_tensors_and_gives_the_same_gradients(tiny_cfg):
    """Gradient checkpointing is a flag on Block: same outputs and gradients, fewer saved tensors."""
    x = torch.randint(0, tiny_cfg.vocab_size, (2, tiny_cfg.context))
    grads, saved = [], []
    for flag in (False, True):
        torch.manual_seed(0)
        model = GPT(tiny_cfg)
        for block in model.blocks:
            block.checkpoint = flag
        count = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.append(t) or t, lambda t: t):
            loss = model(x, x)[1]
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
        saved.append(len(count))
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1)
    assert saved[1] < saved[0]


def test_too_long_sequence(tiny_cfg):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        GPT(tiny_cfg)(torch.zeros(1, tiny_cfg.context + 1, dtype=torch.long))
