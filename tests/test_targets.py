"""lorakit.targets and lorakit.files: one target resolution, one module replacement, one safe reader."""

import pytest
import torch
import torch.nn as nn

from lorakit import qlora, siblings
from lorakit.files import read_safetensors
from lorakit.lora import inject_lora
from lorakit.model import GPT, GPTConfig
from lorakit.targets import check_targets, matches, output_head, replace_module, resolve_targets


def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(context=16, n_layer=2, n_head=2, d_model=32)).eval()


def test_a_target_names_a_full_path_or_its_last_components():
    assert matches("blocks.0.attn.q_proj", "q_proj") and matches(
        "blocks.0.attn.q_proj", "attn.q_proj"
    )
    assert matches("blocks.0.attn.q_proj", "blocks.0.attn.q_proj")
    assert not matches("blocks.0.attn.qq_proj", "q_proj"), "a suffix match is by whole components"


def test_all_linear_leaves_the_output_head_alone():
    model = gpt()
    names = resolve_targets(model, "all-linear")
    assert "lm_head" not in names and output_head(model) is model.lm_head
    assert len(names) == 2 * 6, "q, k, v, o, up, down in each of the two blocks"
    assert resolve_targets(model, ["lm_head"]) == ["lm_head"], "LoRA may name the head explicitly"
    with pytest.raises(ValueError, match="the output head is never a target"):
        resolve_targets(model, ["lm_head"], head_allowed=False)


def test_the_target_list_is_checked_once_for_every_caller():
    assert check_targets("q_proj") == ("q_proj",) and check_targets(["a", "b"]) == ("a", "b")
    assert check_targets("all-linear") == "all-linear"
    with pytest.raises(TypeError, match="targets must be"):
        check_targets([3])
    with pytest.raises(ValueError, match="targets is empty"):
        check_targets([])
    for add in (
        lambda m: inject_lora(m, ["nope"], r=2, alpha=2),
        lambda m: qlora.prepare_qlora(m, ["nope"], r=2, alpha=2),
        lambda m: siblings.add_ia3(m, ("nope",), ()),
    ):
        with pytest.raises(ValueError, match=r"target\(s\) \['nope'\] match no linear layer"):
            add(gpt())


def test_replace_module_by_dotted_path():
    model = gpt()
    new = nn.Identity()
    replace_module(model, "blocks.1.attn.v_proj", new)
    assert model.blocks[1].attn.v_proj is new
    top = nn.Sequential(nn.Linear(2, 2))
    replace_module(top, "0", new)
    assert top[0] is new


def test_the_one_reader_refuses_what_is_not_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_safetensors(tmp_path / "missing.safetensors")
    pickle_file = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, pickle_file)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        read_safetensors(pickle_file)
