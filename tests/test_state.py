"""State files (sdguard.core.state): nested state dicts round-trip through safetensors + JSON, and a
corrupt, truncated or foreign checkpoint is refused with one sentence naming the file."""

import json
import math

import pytest
import torch

from sdguard.core.errors import StateError
from sdguard.core.state import (
    checkpoint_exists,
    checkpoint_paths,
    flatten,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
    unflatten,
)

KEY = {"recipe": "test", "lr": 1e-3, "channels": [32, 64], "options": {"eta": 1.0}}


def _same(a, b):
    """Equal, tensors bit for bit (dtype and shape too), tuples read back as lists."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _adamw_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.99), weight_decay=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    return net, opt


def test_adamw_state_dict_round_trips():
    net, opt = _adamw_state()
    sd = opt.state_dict()
    assert isinstance(next(iter(sd["state"])), int) and isinstance(sd["state"][0]["step"], torch.Tensor)
    tensors, skeleton = flatten(sd)
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert _same(sd, back)  # int parameter ids, 0-d step tensors, betas (as a list), None options
    again = torch.optim.AdamW(net.parameters(), lr=5.0)
    again.load_state_dict(back)
    assert again.param_groups[0]["lr"] == 1e-3 and list(again.param_groups[0]["betas"]) == [0.8, 0.99]


def test_generator_and_nested_state_round_trip_through_files(tmp_path):
    net, opt = _adamw_state()
    gen = torch.Generator().manual_seed(7)
    torch.randn(10, generator=gen)
    state = {"model": net.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
             "loop": {"step": 12, "scaling": None, "loss": float("nan"), "best": float("inf"), "log": [{"a": 1.5}]},
             "tied": [net[0].weight, net[0].weight], "a/b": torch.ones(2), "a": {"b": torch.zeros(2)}}
    save_checkpoint(tmp_path, "ck", key=KEY, state=state)
    assert checkpoint_exists(tmp_path, "ck")
    back = load_checkpoint(tmp_path, "ck", key=dict(KEY))
    assert _same(state, back)  # NaN and inf floats, the same tensor twice, colliding paths
    restored = torch.Generator()
    restored.set_state(back["rng"])
    assert torch.equal(torch.randn(5, generator=restored), torch.randn(5, generator=gen))
    remove_checkpoint(tmp_path, "ck")
    assert not checkpoint_exists(tmp_path, "ck") and load_checkpoint(tmp_path, "ck", key=KEY) is None


@pytest.fixture
def saved(tmp_path):
    save_checkpoint(tmp_path, "ck", key=KEY, state={"w": torch.arange(6.0), "step": 3})
    return checkpoint_paths(tmp_path, "ck")


def test_a_corrupt_tensor_file_is_refused(saved, tmp_path):
    st, _ = saved
    data = bytearray(st.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the last tensor
    st.write_bytes(bytes(data))
    with pytest.raises(StateError, match=r"^--resume '.*ck\.safetensors' does not match its checkpoint record") as exc:
        load_checkpoint(tmp_path, "ck", key=KEY)
    assert exc.value.exit_code == 2 and str(exc.value).endswith("start anew with --overwrite instead of --resume.")
    st.write_bytes(b"")
    with pytest.raises(StateError, match="ck.safetensors"):
        load_checkpoint(tmp_path, "ck", key=KEY)


def test_a_truncated_record_or_a_missing_half_is_refused(saved, tmp_path):
    st, js = saved
    text = js.read_text()
    js.write_text(text[: len(text) // 2])
    with pytest.raises(StateError, match=r"^--resume '.*ck\.json' is not a readable sdguard checkpoint"):
        load_checkpoint(tmp_path, "ck", key=KEY)
    js.unlink()
    with pytest.raises(StateError, match=r"ck\.json' is missing"):
        load_checkpoint(tmp_path, "ck", key=KEY)


def test_another_runs_checkpoint_is_refused_naming_the_setting(saved, tmp_path):
    with pytest.raises(StateError, match=r"ck\.json' was written by another run \(lr: 0\.001 there, 0\.002 now\)"):
        load_checkpoint(tmp_path, "ck", key={**KEY, "lr": 2e-3})
    with pytest.raises(StateError, match=r"another run \(options\.eta: 1\.0 there, 2\.0 now\)"):
        load_checkpoint(tmp_path, "ck", key={**KEY, "options": {"eta": 2.0}})
    with pytest.raises(StateError, match=r"another run \(extra: None there, 1 now\)"):
        load_checkpoint(tmp_path, "ck", key={**KEY, "extra": 1})
    assert load_checkpoint(tmp_path, "ck", key={**KEY, "channels": (32, 64)})["step"] == 3  # a tuple is a list
