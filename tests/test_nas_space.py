"""The `nas` family: every drawn architecture builds for both input shapes, trains a step and exports; the nni.nas
model space is the same space, and its frozen models are our plain networks (same parameters, same outputs, state
dicts interchangeable); an architecture file round-trips through the config; bad architectures fail in one line.

200 seeded draws in the slow tier (6 in the fast tier), each built for 28x28x1 and 32x32x3 and stepped once on a batch
of 2, and exported with torch.export on one of the two shapes (alternating: the network's code path does not depend
on the shape, and an export costs about 0.5 s):

    .venv/bin/pytest tests/test_nas_space.py -q
"""
from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

from tests.test_trial_cli import assert_one_line_error, call_trial
from trial import config, data, nas_space
from trial.model import build_model, count_parameters
from trial.nas_space import NasNet, check_arch, sample_arch

SHAPES = [(1, 28, 28), (3, 32, 32)]
DRAWS = 200
FAST_DRAWS = 6
BATCH = 2

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def one_step(net: torch.nn.Module, shape, export: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(BATCH, *shape)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    out = net.train()(x)
    assert out.shape == (BATCH, 10)
    loss = F.cross_entropy(out, torch.arange(BATCH))
    assert math.isfinite(float(loss.detach()))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    if export:
        net.eval()
        program = torch.export.export(net, (x,))
        torch.testing.assert_close(program.module()(x), net(x))


@pytest.mark.parametrize("draws", [pytest.param(FAST_DRAWS, id="fast"),
                                   pytest.param(DRAWS, id="slow", marks=pytest.mark.slow)])
def test_every_drawn_architecture_builds_trains_and_exports(draws):
    rng = random.Random(0)
    for i in range(draws):
        arch = sample_arch(rng)
        for j, shape in enumerate(SHAPES):
            one_step(NasNet(shape, 10, arch), shape, export=(i + j) % 2 == 0)


def test_draws_are_seeded_and_cover_the_space():
    assert sample_arch(random.Random(3)) == sample_arch(random.Random(3))
    draws = [sample_arch(random.Random(seed)) for seed in range(40)]
    assert {d["s1_c1_op1"] for d in draws} == set(nas_space.OPS)
    assert {d["s2_width"] for d in draws} == set(nas_space.WIDTHS[1])
    assert {d["s3_depth"] for d in draws} == set(nas_space.DEPTHS)


def dead_arch() -> dict:
    """A drawn architecture whose first cell has zero as node 1's op and nodes 2 and 3 reading node 1 or 2."""
    return {**sample_arch(random.Random(0)), "s1_c1_op1": "zero", "s1_c1_in2": [1], "s1_c1_in3": [2]}


def test_a_cell_whose_output_cannot_see_its_input_is_refused_and_never_drawn(monkeypatch):
    arch = dead_arch()
    assert nas_space.dead_cell({k: arch[k] for k in nas_space.active_labels(
        {s: arch[f"s{s}_depth"] for s in (1, 2, 3)})}) == "s1_c1"
    with pytest.raises(nas_space.ArchError, match=r"cell s1_c1: every path .* 'zero' op \(s1_c1_op1\)"):
        check_arch(arch)
    with pytest.raises(config.ConfigError, match="s1_c1"):
        config.resolve({"family": "nas", "nas_arch": arch})
    # the same cell with node 2 reading the cell's input lives (unless that op is zero too)
    alive = {**arch, "s1_c1_in2": [0], "s1_c1_op2": "skip_connect"}
    assert check_arch(alive)["s1_c1_op1"] == "zero"
    # the rule is about what the network does: a dead cell's network gives every image the same logits
    torch.manual_seed(0)
    live_net = NasNet((1, 28, 28), 10, alive).eval()
    monkeypatch.setattr(nas_space, "dead_cell", lambda arch: None)     # build the refused network anyway
    dead_net = NasNet((1, 28, 28), 10, arch).eval()
    monkeypatch.undo()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(dead_net(x), dead_net(x)[:1].expand(4, -1))
        assert not torch.allclose(live_net(x), live_net(x)[:1].expand(4, -1))
    # uniform draws hold dead cells about a fifth of the time; sample_arch redraws them
    assert all(nas_space.dead_cell(check_arch(sample_arch(random.Random(seed)))) is None for seed in range(300))


def test_oneshot_supernet_draws_live_architectures_only():
    pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
    from experiments.nas.oneshot import is_live_sample, make_strategy
    assert not is_live_sample(dead_arch()) and is_live_sample(sample_arch(random.Random(0)))
    assert make_strategy("random", 3e-4).filter is is_live_sample       # nni's RandomOneShot passes it to its module


def test_gated_cells_start_as_the_identity_and_learn_their_gate():
    """nas_cell_gate: each cell is x + g * cell(x), g from 0, so at initialisation every cell passes its input
    through whatever its ops, and a training step moves every gate; without the key the network is as before."""
    arch = sample_arch(random.Random(2))
    cfg = config.resolve({"family": "nas", "nas_arch": arch, "nas_cell_gate": True})
    net = build_model(cfg, data.INFO["fmnist"].shape)
    cells = [m for m in net.modules() if isinstance(m, nas_space.Cell)]
    assert len(cells) == sum(arch[f"s{s}_depth"] for s in (1, 2, 3))
    seen = []
    hooks = [c.register_forward_hook(lambda m, args, out: seen.append(torch.equal(out, args[0]))) for c in cells]
    net.train()(torch.randn(4, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert seen == [True] * len(cells)
    one_step(net, (1, 28, 28), export=True)
    assert all(float(c.gate.detach()) != 0 for c in cells)
    plain = NasNet((1, 28, 28), 10, arch)
    assert all(c.gate is None for c in plain.modules() if isinstance(c, nas_space.Cell))
    assert count_parameters(net) == count_parameters(plain) + len(cells)
    assert cfg.to_dict()["nas_cell_gate"] is True
    assert "nas_cell_gate" not in config.resolve({"family": "nas", "nas_arch": arch}).to_dict()
    with pytest.raises(config.ConfigError, match="nas_cell_gate gates the cells of family 'nas' only"):
        config.resolve({"family": "residual", "nas_cell_gate": True})


def test_darts_derivation_never_keeps_a_zero_op():
    pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
    from experiments.nas.oneshot import without_zero_ops
    exported = {"s1_c1_op1": "zero", "s1_c1_op2": "conv_3x3", "s1_width": 16}
    probs = {"s1_c1_op1": {"zero": 0.5, "sep_conv_3x3": 0.3, "skip_connect": 0.2},
             "s1_c1_op2": {"zero": 0.1, "conv_3x3": 0.9}, "s1_width": {16: 0.6, 24: 0.4}}
    assert without_zero_ops(exported, probs) == {"s1_c1_op1": "sep_conv_3x3", "s1_c1_op2": "conv_3x3",
                                                 "s1_width": 16}


def test_multitrial_filter_passes_live_architectures_only():
    pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
    from types import SimpleNamespace

    from experiments.nas.multitrial import is_live
    assert not is_live(SimpleNamespace(sample=dead_arch()))
    assert is_live(SimpleNamespace(sample=sample_arch(random.Random(0))))


def test_multitrial_filter_drops_a_network_submitted_before():
    pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
    from types import SimpleNamespace

    from experiments.nas.multitrial import Unseen
    arch = {**sample_arch(random.Random(0)), "s1_depth": 1, "s1_c1_op1": "conv_3x3"}
    unseen = Unseen()
    assert unseen(SimpleNamespace(sample=arch))
    # only an inactive label differs (stage 1 has one cell): the same network, which nni's own dedup lets through
    same_network = {**arch, "s1_c3_op1": "conv_5x5" if arch["s1_c3_op1"] != "conv_5x5" else "conv_3x3"}
    assert same_network != arch and not unseen(SimpleNamespace(sample=same_network))
    assert not unseen(SimpleNamespace(sample=arch))
    assert unseen(SimpleNamespace(sample={**arch, "s1_c1_op1": "conv_5x5"}))     # an active label differs


def test_canonical_form_keeps_the_active_labels():
    arch = {**sample_arch(random.Random(0)), "s1_depth": 1, "s2_depth": 3}
    canonical = check_arch(arch)
    assert "s1_c2_op1" not in canonical and "s2_c3_op3" in canonical
    assert check_arch({**canonical, "s1_c1_in2": 1})["s1_c1_in2"] == [1]      # a bare index is accepted
    inactive_changed = {**arch, "s1_c3_op1": "zero" if arch["s1_c3_op1"] != "zero" else "skip_connect"}
    assert check_arch(inactive_changed) == canonical
    narrow = NasNet((1, 28, 28), 10, arch, width_mult=0.5)
    assert count_parameters(narrow) < count_parameters(NasNet((1, 28, 28), 10, arch))


@pytest.mark.parametrize("change,words", [
    ({"s1_c1_op1": "conv_7x7"}, ["'s1_c1_op1'", "conv_7x7", "sep_conv_3x3", "zero"]),
    ({"s2_width": 40}, ["'s2_width'", "32, 48, 64"]),
    ({"s1_c1_in3": [3]}, ["'s1_c1_in3'", "[0], [1], [2]"]),
    ({"s1_c1_in2": [0, 1]}, ["'s1_c1_in2'"]),
    ({"s9_width": 16}, ["unknown architecture label 's9_width'"]),
    ({"s1_depth": None}, ["'s1_depth'"]),
])
def test_bad_architectures_name_the_label(change, words):
    arch = {**sample_arch(random.Random(0)), **change}
    arch = {k: v for k, v in arch.items() if v is not None}
    with pytest.raises(config.ConfigError) as info:
        config.resolve({"family": "nas", "nas_arch": arch})
    message = str(info.value)
    assert "\n" not in message and message.startswith("parameter 'nas_arch'")
    for word in words:
        assert word in message


def test_family_and_architecture_go_together():
    arch = sample_arch(random.Random(0))
    with pytest.raises(config.ConfigError, match="family 'nas' takes its network from nas_arch"):
        config.resolve({"family": "nas"})
    with pytest.raises(config.ConfigError, match="nas_arch shapes family 'nas' only"):
        config.resolve({"nas_arch": arch})
    with pytest.raises(config.ConfigError, match="kernel, filters shape"):
        config.resolve({"family": "nas", "nas_arch": arch, "filters": 8, "kernel": 5})


def test_other_configs_keep_their_dict_and_digest():
    cfg = config.resolve({"dataset": "mnist", "filters": 16})
    assert "nas_arch" not in cfg.to_dict()                      # their config.json, digests and resume keys as before
    assert "val_every_epoch" not in cfg.to_dict()               # nor does a later key at its default
    once = config.resolve(cfg.to_dict(), {"keep": "last", "lr_schedule": "cosine", "val_every_epoch": False})
    assert once.to_dict()["val_every_epoch"] is False and config.resolve(once.to_dict()) == once
    assert config.resolve(cfg.to_dict()) == cfg


def test_an_architecture_file_is_a_params_file(tmp_path):
    arch = sample_arch(random.Random(1))
    path = tmp_path / "arch.json"
    written = config.save_arch_file(path, arch, {"dataset": "cifar10", "batch_size": 64}, "a note")
    assert json.loads(path.read_text()) == written and written["_comment"] == "a note"
    cfg = config.resolve(config.load_params_file(str(path)))
    assert (cfg.family, cfg.dataset, cfg.batch_size, cfg.nas_arch) == ("nas", "cifar10", 64, check_arch(arch))
    assert config.resolve(config.load_arch_file(str(path))) == cfg
    # the bare dict of labels, and a params file that names the file
    (tmp_path / "bare.json").write_text(json.dumps(arch))
    assert config.resolve(config.load_arch_file(str(tmp_path / "bare.json"))).nas_arch == cfg.nas_arch
    named = config.resolve({"family": "nas", "nas_arch": str(path)})
    assert named.nas_arch == cfg.nas_arch
    # the resolved config carries the architecture itself: config.json alone rebuilds the network
    again = config.resolve(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.digest() == cfg.digest()
    assert count_parameters(build_model(again, data.INFO["cifar10"].shape)) == \
        count_parameters(NasNet((3, 32, 32), 10, arch, dropout=cfg.dropout))


def test_trial_cli_refuses_a_bad_architecture_in_one_line(tmp_path):
    bad = {**sample_arch(random.Random(0)), "s1_c1_op2": "conv_9x9"}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    proc = call_trial("--arch", tmp_path / "bad.json", "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, "'s1_c1_op2'", "conv_9x9")
    proc = call_trial("--arch", tmp_path / "missing.json", "--output-dir", tmp_path / "out")
    assert_one_line_error(proc, "missing.json")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# the nni.nas model space is the same space, and freezing it gives our network
# ---------------------------------------------------------------------------------------------------------------------

def nni_space(shape, cell_gate: bool = False):
    pytest.importorskip("nni.nas.nn.pytorch", reason="nni.nas needs pytorch-lightning (requirements.txt)")
    from experiments.nas.space import NasSpace
    return NasSpace(shape, 10, cell_gate=cell_gate)


def nni_draw(space, seed: int) -> dict:
    """nni's own sampler, seeded, drawing again while the architecture has a dead cell (as the multi-trial search's
    Filter middleware makes its strategies do)."""
    import numpy as np
    random_state = np.random.RandomState(seed)
    while True:
        sample: dict = {}
        space.random(memo=sample, random_state=random_state)
        try:
            check_arch(sample)
            return sample
        except nas_space.ArchError:
            continue


def test_nni_space_has_the_same_labels_and_candidates():
    space = nni_space((1, 28, 28))
    simplified = space.simplify()
    assert set(simplified) == set(nas_space.space())
    for label, candidates in nas_space.space().items():
        assert list(simplified[label].values) == candidates, label


def round_trip_cases():
    """Each draw on each shape; a plain and a gated draw (one per shape) in the fast tier, the rest in the slow one
    (nni's draw and freeze cost about a second a case)."""
    for seed, cell_gate in [(0, False), (1, False), (2, False), (3, True)]:
        for shape, name in zip(SHAPES, ["28x28x1", "32x32x3"]):
            fast = (seed, name) in ((0, "28x28x1"), (3, "32x32x3"))
            yield pytest.param(shape, seed, cell_gate, id=f"{seed}-{cell_gate}-{name}",
                               marks=() if fast else pytest.mark.slow)


@pytest.mark.parametrize("shape,seed,cell_gate", list(round_trip_cases()))
def test_exported_architecture_round_trips(shape, seed, cell_gate, tmp_path):
    """nni's sample -> architecture file -> config -> our builder: the same parameter count as nni's frozen model,
    state dicts loadable both ways, and the same outputs for the same weights (gated cells too: the one-shot
    search's space)."""
    space = nni_space(shape, cell_gate)
    arch = nni_draw(space, seed)
    frozen = space.freeze(arch)
    dataset = "mnist" if shape[0] == 1 else "cifar10"
    config.save_arch_file(tmp_path / "arch.json", json.loads(json.dumps(arch)),
                          {"dataset": dataset, "dropout": 0.0, **({"nas_cell_gate": True} if cell_gate else {})})
    cfg = config.resolve(config.load_arch_file(str(tmp_path / "arch.json")))
    ours = build_model(cfg, data.INFO[dataset].shape)
    assert count_parameters(ours) == count_parameters(frozen)
    assert ours.state_dict().keys() == frozen.state_dict().keys()
    x = torch.randn(3, *shape)
    ours.load_state_dict(frozen.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), frozen.eval()(x))
    one_step(ours, shape, export=False)         # trained weights (and BN statistics) go back the other way
    frozen.load_state_dict(ours.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(frozen.eval()(x), ours.eval()(x))
    gates = [k for k in ours.state_dict() if k.endswith(".gate")]
    assert len(gates) == (sum(arch[f"s{s}_depth"] for s in (1, 2, 3)) if cell_gate else 0)
    assert all(float(ours.state_dict()[k]) != 0 for k in gates)     # trained gates went across


def test_dilated_convs_run_in_float32_under_cpu_bfloat16_autocast():
    """torch 2.14.1's CPU bfloat16 kernel gets the weight gradient of a dilated depthwise conv on 32x32 channels-last
    maps wrong (relative error 1.2-1.8: python -m experiments.studies.bf16_ops); the dil_conv ops of a NasNet
    use nas_space.Float32DilatedConv2d, which computes them in float32 there, gradients included."""
    arch = {label: ("dil_conv_5x5" if nas_space.is_op(label) else choice)
            for label, choice in sample_arch(random.Random(0)).items()}
    net = NasNet((3, 32, 32), 10, arch)
    dilated = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation != (1, 1)]
    assert dilated and all(type(m) is nas_space.Float32DilatedConv2d for m in dilated)
    torch.manual_seed(0)
    conv = dilated[0].to(memory_format=torch.channels_last)
    x = torch.randn(8, conv.in_channels, 32, 32).to(memory_format=torch.channels_last)
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    grads = []
    for amp in (False, True):
        conv.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = conv(x)
        assert out.dtype == torch.float32
        (out * weights).sum().backward()
        grads.append(conv.weight.grad.clone())
    assert torch.allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)   # bfloat16 would be ~1e-3 off at best
    # the rest of the network still runs in bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(torch.randn(2, 3, 32, 32)).dtype == torch.bfloat16
