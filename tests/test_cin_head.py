"""The CIN head (recnas/supernet/head.py): xDeepFM's CIN beside every architecture's blocks of a
space with `cin_head`, in the trained models only, never in the supernet or a candidate's score."""

import io
import re

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console

from recnas.errors import ConfigError
from recnas.search.evaluator import CandidateEvaluator, Genotype
from recnas.search.job import load_job_config
from recnas.search.pipeline import run_job
from recnas.space import SearchSpace, get_space, resolve_space
from recnas.space.samplers import random_architecture
from recnas.supernet import Subnet, Supernet
from recnas.train import TrainConfig
from tests.conftest import tiny_space
from tests.test_supernet import batch, meta


@pytest.mark.parametrize("bad", [(3, 4), (4, 0)])  # an odd layer that sends half its maps on; an empty layer
def test_a_bad_cin_head_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="cin_head"):
        get_space("full", cin_head=bad)


def test_space_spec_omits_an_empty_cin_head():
    """Model specs written before `cin_head` existed must still match the same model."""
    plain, head = get_space("full-tiny"), tiny_space("cin-tiny")
    assert "cin_head" not in plain.spec() and head.spec()["cin_head"] == [4, 3]
    assert head.blocks_only() == plain and head.blocks_only().spec() == plain.spec()


def test_a_default_cin_head_split_is_left_out_of_the_spec_and_a_false_one_round_trips():
    """A space's spec, and so every model spec, run folder and checkpoint written before
    `cin_head_split` existed, stays as it was; a head without the split is recorded and rebuilt."""
    from recnas.train import subnet_spec, supernet_spec

    plain, split, nosplit = get_space("full-tiny"), tiny_space("cin-tiny"), tiny_space("cin-nosplit-tiny")
    before = {"name": "full-tiny", "n_blocks": 3, "dense_ops": ["fc", "gating", "sum"], "sparse_ops": ["efc", "dot", "attention"],
              "dense_dims": [8, 16, 32], "sparse_dims": [4, 8], "emb_dim": 8}  # a spec as written before the field
    assert plain.spec() == before and list(plain.spec()) == list(before)
    assert split.spec() == {**before, "cin_head": [4, 3]} and list(split.spec()) == [*before, "cin_head"]
    assert nosplit.spec() == {**before, "cin_head": [4, 3], "cin_head_split": False}
    assert nosplit.cin_head_split is False and split.cin_head_split is True
    m = meta()
    arch = random_architecture(np.random.default_rng(4), nosplit)
    for space in (plain, split, nosplit):
        assert SearchSpace(**space.spec()) == space
        assert SearchSpace(**subnet_spec(arch, space, m)["space"]) == space  # as a checkpoint holds it
    assert subnet_spec(arch, nosplit, m) != subnet_spec(arch, split, m)
    # without its head the space is the plain one: no `cin_head_split: false` left on a head-less space
    assert nosplit.blocks_only() == plain and nosplit.blocks_only().spec() == before
    assert supernet_spec(nosplit, m) == supernet_spec(plain, m)
    assert SearchSpace(**nosplit.blocks_only().model_dump()) == plain


def test_a_space_file_rebuilds_a_cin_head_without_the_split(tmp_path):
    """`space.yaml` (a search run writes the whole `model_dump`) and `recnas subnet train --space`."""
    nosplit = tiny_space("cin-nosplit-tiny")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(nosplit.model_dump(mode="json"), sort_keys=False))
    assert resolve_space(path) == nosplit
    path.write_text(yaml.safe_dump({**nosplit.model_dump(mode="json"), "cin_head": []}))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cin_head_split: false needs a cin_head")):
        resolve_space(path)


def _job_file(tmp_path, overrides: dict):
    from recnas.search.job import PRESETS

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"space_overrides": {**PRESETS["smoke"]["space_overrides"], **overrides}}))
    return path


ODD = r"key 'cin_head': every CIN layer but the last needs an even size \(half of its maps go on to the next\) \(got \[3, 4\]\); with cin_head_split: false"


@pytest.mark.parametrize("overrides, match", [
    ({"cin_head": [3, 4]}, ODD),  # the split, by default: a non-final layer sends half its maps on
    ({"cin_head": [3, 4], "cin_head_split": True}, ODD),
    ({"cin_head": [4, 0], "cin_head_split": False}, r"key 'cin_head': a CIN needs at least one layer, and positive layer sizes \(got \[4, 0\]\)"),
    ({"cin_head_split": False}, "cin_head_split: false needs a cin_head"),  # it would change nothing
    ({"cin_head": [], "cin_head_split": False}, "cin_head_split: false needs a cin_head"),
    ({"cin_head": [4], "cin_head_split": "half"}, r"key 'cin_head_split': Input should be a valid boolean"),
])
def test_a_bad_cin_head_split_is_a_clear_error_of_the_job_file(tmp_path, overrides, match):
    path = _job_file(tmp_path, overrides)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: invalid search space: ") + match):
        load_job_config("smoke", path)


def test_odd_cin_head_sizes_are_allowed_without_the_split(tmp_path):
    cfg = load_job_config("smoke", _job_file(tmp_path, {"cin_head": [3, 5], "cin_head_split": False}))
    space = get_space(cfg.space, **cfg.space_overrides)
    assert space.cin_head == (3, 5) and space.cin_head_split is False
    assert get_space("full-tiny", cin_head=(3, 3, 1), cin_head_split=False).spec()["cin_head"] == [3, 3, 1]


@pytest.mark.parametrize("n_dense", [3, 0])
def test_cin_head_adds_xdeepfms_cin_of_the_raw_fields_to_a_subnets_logit(n_dense):
    from recnas.baselines.interactions import CIN

    space, m = tiny_space("cin-tiny"), meta(n_dense)
    arch = random_architecture(np.random.default_rng(3), space)
    sub = Subnet(arch, space, m)
    dense, sparse = batch(m)
    out = sub(dense, sparse)
    out.sum().backward()
    head = sub.cin_head
    assert isinstance(head.cin, CIN) and head.cin.convs[0].weight.grad.abs().sum() > 0
    assert head.cin.convs[0].in_channels == (5 + n_dense) ** 2  # every numeric feature is one more field
    assert (head.numeric is None) == (n_dense == 0)
    plain = Subnet(arch, space.blocks_only(), m)  # the same blocks without the head
    missing, unexpected = plain.load_state_dict(sub.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("cin_head.") for k in unexpected)
    with torch.no_grad():
        torch.testing.assert_close(out, plain(dense, sparse) + head(dense, sparse, sub.embedding(sparse)).squeeze(-1))


@pytest.mark.parametrize("n_dense", [3, 0])
def test_a_cin_head_without_the_split_pools_and_sends_on_every_map(n_dense):
    """`cin_head_split: false` builds BARS's CIN in the head: layer 0's 4 maps all go on to
    layer 1 (4 * F inputs, not 2 * F) and all 4 + 3 maps are pooled into the logit (not 2 + 3)."""
    from recnas.baselines.interactions import CIN, cin_layers

    m, n_fields = meta(n_dense), 5 + n_dense
    arch = random_architecture(np.random.default_rng(3), tiny_space("cin-tiny"))
    split = Subnet(arch, tiny_space("cin-tiny"), m)
    sub = Subnet(arch, tiny_space("cin-nosplit-tiny"), m)
    for net, split_half in ((split, True), (sub, False)):
        layers = cin_layers(n_fields, (4, 3), split_half)
        assert [c.in_channels for c in net.cin_head.cin.convs] == [n_in * n_fields for n_in, _, _ in layers]
        assert net.cin_head.out.in_features == net.cin_head.cin.out_dim == sum(size - half for _, size, half in layers)
    assert sub.cin_head.cin.split == [0, 0] and split.cin_head.cin.split == [2, 0]
    assert [c.in_channels for c in sub.cin_head.cin.convs] == [n_fields * n_fields, 4 * n_fields]
    assert (sub.cin_head.out.in_features, split.cin_head.out.in_features) == (7, 5)
    n_params = [sum(p.numel() for p in net.parameters()) for net in (split, sub)]
    assert n_params[1] - n_params[0] == (4 - 2) * n_fields * 3 + (7 - 5)  # layer 1's wider conv, the wider output
    # the head computes BARS's CIN of the fields (`CIN(..., split_half=False)` as the baseline has it)
    bars = CIN(n_fields, [4, 3], split_half=False)
    bars.load_state_dict(sub.cin_head.cin.state_dict())
    dense, sparse = batch(m)
    emb = sub.embedding(sparse)
    fields = emb if n_dense == 0 else torch.cat([emb, sub.cin_head.numeric(dense)], 1)
    with torch.no_grad():
        torch.testing.assert_close(sub.cin_head(dense, sparse, emb), sub.cin_head.out(bars(fields)) + sub.cin_head.linear(dense, sparse).unsqueeze(-1))
    # and it trains: one step moves every conv, each pooled map's weight in the output included
    opt = torch.optim.SGD(sub.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in sub.cin_head.state_dict().items()}
    loss = torch.nn.functional.binary_cross_entropy_with_logits(sub(dense, sparse), torch.ones(len(sparse)))
    loss.backward()
    assert all(conv.weight.grad.abs().sum() > 0 for conv in sub.cin_head.cin.convs)
    assert (sub.cin_head.out.weight.grad != 0).all()
    opt.step()
    assert all(not torch.equal(v, sub.cin_head.state_dict()[k]) for k, v in before.items() if k.startswith(("cin.", "out.")))
    assert torch.isfinite(sub(dense, sparse)).all()


def test_a_cin_head_without_the_split_takes_odd_sizes_and_rebuilds_from_its_spec():
    from recnas.train import subnet_spec
    from recnas.train.model_factory import build_model

    space, m = get_space("full-tiny", cin_head=(3, 5), cin_head_split=False), meta()
    arch = random_architecture(np.random.default_rng(6), space)
    sub = Subnet(arch, space, m)
    assert [c.out_channels for c in sub.cin_head.cin.convs] == [3, 5] and sub.cin_head.cin.out_dim == 8
    rebuilt = build_model(subnet_spec(arch, space, m), m)
    rebuilt.load_state_dict(sub.state_dict())  # strict: the same head, unsplit
    assert rebuilt.space == space and rebuilt.cin_head.cin.split == [0, 0]
    dense, sparse = batch(m)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(dense, sparse), sub(dense, sparse))


def test_the_supernet_has_no_cin_head_and_subnets_keep_their_own():
    """Candidates are ranked on their blocks alone: the supernet of a space with a head is the
    blocks-only space's, and an inherited subnet gets the supernet's blocks plus a fresh head."""
    from recnas.train import subnet_spec, supernet_spec

    space, m = tiny_space("cin-tiny"), meta()
    torch.manual_seed(0)
    net = Supernet(space, m)
    torch.manual_seed(0)
    plain = Supernet(space.blocks_only(), m)
    assert not any(k.startswith("cin_head") for k in net.state_dict())
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in net.state_dict().items())
    assert supernet_spec(space, m) == supernet_spec(space.blocks_only(), m)
    arch = random_architecture(np.random.default_rng(5), space)
    assert subnet_spec(arch, space, m) != subnet_spec(arch, space.blocks_only(), m)
    torch.manual_seed(1)
    fresh = Subnet(arch, space, m).cin_head.state_dict()
    torch.manual_seed(1)
    sub = Subnet.from_architecture(arch, space, m, supernet=net)
    assert all(torch.equal(v, fresh[k]) for k, v in sub.cin_head.state_dict().items())
    dense, sparse = batch(m)
    with torch.no_grad():
        blocks = sub(dense, sparse) - sub.cin_head(dense, sparse, sub.embedding(sparse)).squeeze(-1)
        torch.testing.assert_close(blocks, net(dense, sparse, arch), rtol=1e-5, atol=1e-6)


def test_candidates_are_scored_without_the_head_and_costed_with_it(tiny_store):
    space = tiny_space("cin-tiny")
    g = Genotype(random_architecture(np.random.default_rng(2), space))
    recipe = TrainConfig(batch_size=64, max_steps=3, eval_every=0, device="cpu", seed=3)
    with_head = CandidateEvaluator(space, tiny_store, recipe, eval_rows=None)
    without = CandidateEvaluator(space.blocks_only(), tiny_store, recipe, eval_rows=None)
    assert with_head.subnet(g).cin_head is None
    scored, plain = with_head(g), without(g)
    assert scored["logloss"] == plain["logloss"]
    assert scored["flops"] > plain["flops"] and scored["params"] > plain["params"]


def test_a_search_with_a_cin_head_ranks_as_without_it_and_trains_its_finalists_with_it(tmp_path):
    from recnas.search.job import PRESETS
    from recnas.train.model_factory import load_trained

    tiny = PRESETS["smoke"]["space_overrides"]
    reports, printed = {}, {}
    for name, extra in (("plain", {}), ("head", {"cin_head": [4, 3]})):
        cfg = load_job_config("smoke", baselines=["lr"], finalists=2, space_overrides={**tiny, **extra})
        log = io.StringIO()
        reports[name] = run_job(cfg, tmp_path / name, progress=False, console=Console(file=log, width=1000))
        printed[name] = log.getvalue()
    plain, head = reports["plain"], reports["head"]
    # the smoke recipe has no table decay, under which the head was measured to hurt: said so
    assert "cin_head without weight decay on the embedding tables" in printed["head"]
    assert "cin_head without" not in printed["plain"]
    assert "sized for a GPU" not in printed["plain"]
    # the same supernet, the same scores, the same finalists
    assert [f["search_score"] for f in head["finalists"]] == [f["search_score"] for f in plain["finalists"]]
    assert [f["key"] for f in head["finalists"]] == [f["key"] for f in plain["finalists"]]
    supernet = torch.load(tmp_path / "head" / "supernet" / "model.pt", weights_only=False)
    assert not any("cin_head" in k for k in supernet["model"])
    # ... but every finalist, and so the searched model, trains with the head
    model, spec, _ = load_trained(tmp_path / "head" / "best" / "model.pt")
    assert model.cin_head is not None and spec["space"]["cin_head"] == [4, 3]
    # the run's space.yaml rebuilds it (`recnas subnet train --space <run>/space.yaml`)
    assert resolve_space(tmp_path / "head" / "space.yaml").cin_head == (4, 3)
    rows = {name: next(r for r in rep["models"] if r["model"] == "recnas (searched)") for name, rep in reports.items()}
    assert rows["head"]["flops"] > rows["plain"]["flops"]


@pytest.mark.parametrize("final, grid, decays", [
    ({}, {}, False),
    ({"embedding_weight_decay": 1e-3}, {}, True),
    ({}, {"embedding_weight_decay": [3e-4, 1e-3]}, True),
    ({}, {"embedding_weight_decay": [0.0, 1e-3]}, False),  # one point of the grid trains without it
    ({"weight_decay": 1e-4}, {}, True),  # unset, the tables get the general decay ...
    ({"weight_decay": 1e-4, "embedding_lr": 1e-2}, {}, False),  # ... but none beside a separate embedding_lr
])
def test_decays_every_table_reads_the_final_recipe_and_every_grid_point(final, grid, decays):
    from recnas.search.job import decays_every_table

    assert decays_every_table(load_job_config("smoke", final=final, final_grid=grid)) is decays


def test_a_cin_head_takes_a_single_numeric_feature_as_one_more_field():
    """One dense feature is one more CIN field, as any number is (mutation round 4, H01)."""
    space, m = tiny_space("cin-tiny"), meta(1)
    sub = Subnet(random_architecture(np.random.default_rng(3), space), space, m)
    assert sub.cin_head.numeric is not None and sub.cin_head.cin.convs[0].in_channels == 6 * 6
    dense, sparse = batch(m)
    assert torch.isfinite(sub(dense, sparse)).all()


def test_cin_head_parameter_count_by_hand():
    """3 dense + 5 fields (vocab 4..8) at emb_dim 8, CIN (4, 3) split: numeric 3*8; conv 0 takes
    8*8 channels to 4, conv 1 takes 2*8 to 3; a biased 5 -> 1 output; the first-order term's 30
    ids, 3 dense weights and a bias (mutation round 4, H05)."""
    space, m = tiny_space("cin-tiny"), meta(3)
    head = Subnet(random_architecture(np.random.default_rng(3), space), space, m).cin_head
    assert sum(p.numel() for p in head.parameters()) == 3 * 8 + (64 * 4 + 4) + (16 * 3 + 3) + (5 + 1) + (30 + 3 + 1)


def test_a_supernet_keeps_the_blocks_only_space():
    """The supernet of a space with a CIN head holds (and reports) the space without it, so its
    `.space` is the one its candidates are ranked in (mutation round 4, N27)."""
    space = tiny_space("cin-tiny")
    net = Supernet(space, meta())
    assert net.space == space.blocks_only() and net.space.cin_head == ()
