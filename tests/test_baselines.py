"""Baselines: shapes, hyper-parameter handling, hand-counted sizes, and that they learn interactions."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recnas.baselines import BASELINES, build_baseline, default_hparams
from recnas.baselines.interactions import CIN, InteractingLayer, fm_interaction, pairwise_dot
from recnas.data.loader import BatchLoader
from recnas.data.schema import DatasetMeta
from recnas.errors import ConfigError, DataError
from tests.conftest import make_tiny_store

VOCAB = [3, 4, 5]

# Tiny widths: every default is overridden where it sets a size, so tests stay fast.
TINY = {
    "lr": {},
    "dlrm": {"embed_dim": 4, "bottom_mlp": [8, 4], "top_mlp": [6]},
    "deepfm": {"embed_dim": 4, "mlp": [8, 8]},
    "dcnv2": {"embed_dim": 4, "mlp": [8, 8], "cross_layers": 2},
    "autoint": {"embed_dim": 4, "attention_layers": 2, "heads": 2, "attention_dim": 4},
    "xdeepfm": {"embed_dim": 4, "mlp": [8], "cin": [6, 4]},
}
# Variants that exercise the other code paths (options, not just defaults).
VARIANTS = [(name, hp) for name, hp in TINY.items()] + [
    ("dlrm", {**TINY["dlrm"], "interaction": "cat", "dropout": 0.1, "batch_norm": True}),
    ("deepfm", {"embed_dim": 4, "mlp": [], "batch_norm": True, "dropout": 0.2}),
    ("dcnv2", {**TINY["dcnv2"], "structure": "stacked", "low_rank": 3}),
    ("dcnv2", {"embed_dim": 4, "mlp": []}),
    ("autoint", {**TINY["autoint"], "mlp": [8], "residual": False}),
    ("xdeepfm", {"embed_dim": 4, "mlp": [], "cin": [5, 3], "cin_split_half": False}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in hp.items() if k != 'embed_dim') or 'default'}" for n, hp in VARIANTS]


def make_meta(n_dense: int, vocab=VOCAB) -> DatasetMeta:
    return DatasetMeta(
        name="unit",
        dense_names=[f"I{i + 1}" for i in range(n_dense)],
        cat_names=[f"C{i + 1}" for i in range(len(vocab))],
        vocab_sizes=list(vocab),
        rows={},
    )


def random_batch(meta: DatasetMeta, b: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(b, meta.n_dense, generator=g)
    sparse = torch.stack([torch.randint(0, v, (b,), generator=g) for v in meta.vocab_sizes], 1)
    return dense, sparse


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_every_required_model():
    assert set(BASELINES) == {"lr", "dlrm", "deepfm", "dcnv2", "autoint", "xdeepfm"}
    assert set(TINY) == set(BASELINES)


@pytest.mark.parametrize("n_dense", [2, 0])
@pytest.mark.parametrize("name,hp", VARIANTS, ids=IDS)
def test_forward_backward_shapes(name, hp, n_dense):
    meta = make_meta(n_dense)
    model = build_baseline(name, meta, **hp)
    dense, sparse = random_batch(meta)
    out = model(dense, sparse)
    assert out.shape == (8,) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the categorical embeddings must be on the gradient path (the model reads the ids)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name,hp", VARIANTS, ids=IDS)
def test_output_depends_on_sparse_and_dense(name, hp):
    meta = make_meta(2)
    torch.manual_seed(0)
    model = build_baseline(name, meta, **hp).eval()
    with torch.no_grad():  # embeddings start tiny; scale them so a changed id visibly moves the logit
        for p in model.parameters():
            p.mul_(10.0)
    dense, sparse = random_batch(meta)
    base = model(dense, sparse)
    sparse2 = sparse.clone()
    sparse2[:, 0] = (sparse2[:, 0] + 1) % VOCAB[0]
    assert not torch.allclose(model(dense, sparse2), base)
    assert not torch.allclose(model(dense + 1.0, sparse), base)


@pytest.mark.parametrize("name,hp", VARIANTS, ids=IDS)
def test_rebuild_from_hparams_after_json_round_trip(name, hp):
    meta = make_meta(2)
    model = build_baseline(name, meta, **hp)
    hparams = json.loads(json.dumps(model.hparams))  # what a checkpoint stores
    clone = build_baseline(name, meta, **hparams)
    assert clone.hparams == model.hparams
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in clone.state_dict().items()} == shapes
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    dense, sparse = random_batch(meta)
    torch.testing.assert_close(clone(dense, sparse), model(dense, sparse))


def test_defaults_are_the_published_ones():
    assert default_hparams("lr") == {}
    assert default_hparams("deepfm")["mlp"] == [400, 400, 400]
    d = default_hparams("dcnv2")
    assert (d["embed_dim"], d["cross_layers"], d["low_rank"], d["mlp"]) == (16, 3, None, [400, 400, 400])
    a = default_hparams("autoint")
    assert (a["attention_layers"], a["heads"], a["attention_dim"], a["residual"], a["mlp"]) == (3, 2, 32, True, [])
    x = default_hparams("xdeepfm")
    assert (x["cin"], x["mlp"]) == ([200, 200, 200], [400, 400, 400])
    dl = default_hparams("dlrm")
    assert (dl["embed_dim"], dl["bottom_mlp"], dl["top_mlp"], dl["interaction"]) == (16, [512, 256, 64, 16], [512, 256], "dot")
    # full-size defaults build and run on a Criteo-shaped meta (13 dense, 26 fields)
    meta = make_meta(13, [10] * 26)
    dense, sparse = random_batch(meta, b=2)
    for name in BASELINES:
        assert build_baseline(name, meta)(dense, sparse).shape == (2,)


@pytest.mark.parametrize("n_dense", [2, 0])
def test_lr_parameter_count(n_dense):
    model = build_baseline("lr", make_meta(n_dense))
    assert n_params(model) == (3 + 4 + 5) + n_dense + 1  # one weight per id, per dense feature, bias


def test_dlrm_parameter_count_by_hand():
    # vocab 3+4+5=12 ids * dim 4; bottom 2->8->4; 4 vectors -> 6 dot pairs; top (4+6)->6->1
    model = build_baseline("dlrm", make_meta(2), **TINY["dlrm"])
    emb, bottom, top = 12 * 4, (2 * 8 + 8) + (8 * 4 + 4), (10 * 6 + 6) + (6 * 1 + 1)
    assert n_params(model) == emb + bottom + top == 181
    # no dense features: no bottom MLP, 3 vectors -> 3 pairs, top 3->6->1
    model = build_baseline("dlrm", make_meta(0), **TINY["dlrm"])
    assert n_params(model) == 12 * 4 + (3 * 6 + 6) + (6 * 1 + 1)


def test_pairwise_helpers_agree():
    x = torch.randn(5, 4, 3)
    pairs = pairwise_dot(x)
    assert pairs.shape == (5, 6)
    assert torch.allclose(pairs[:, 0], (x[:, 1] * x[:, 0]).sum(-1))  # row-major lower triangle
    assert torch.allclose(pairs[:, -1], (x[:, 3] * x[:, 2]).sum(-1))
    torch.testing.assert_close(fm_interaction(x), pairs.sum(1))


@pytest.mark.parametrize("n_maps, out", [(7, 3), (2, 5), (7, 30)])  # the default picks: fields, maps, outer
def test_cin_layer_contraction_orders_agree(n_maps, out):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(n_maps * 6, out, kernel_size=1).double()
    h, x0 = torch.randn(3, n_maps, 4, dtype=torch.float64), torch.randn(3, 6, 4, dtype=torch.float64)
    ref = conv(torch.einsum("bhd,bfd->bhfd", h, x0).reshape(3, n_maps * 6, 4))  # the paper's outer products
    for way in (None, "outer", "fields", "maps"):
        assert torch.allclose(CIN.layer(conv, h, x0, way), ref, atol=1e-12), way
    with pytest.raises(ValueError, match="contraction order"):
        CIN.layer(conv, h, x0, "diagonal")


def test_cin_forward_and_gradients_equal_the_outer_product_formula(monkeypatch):
    """The blocked CPU contraction (recomputed in the backward) against the paper's formula, with
    more columns than one block so several blocks and their gradient sums are exercised."""
    torch.manual_seed(0)
    cin = CIN(5, [6, 4]).double()
    x = torch.randn(40, 5, 7, dtype=torch.float64, requires_grad=True)

    def reference(x0):
        h, pooled = x0, []
        for conv, half in zip(cin.convs, cin.split):
            z = conv(torch.einsum("bhd,bfd->bhfd", h, x0).flatten(1, 2))
            h, out = (z[:, :half], z[:, half:]) if half else (z, z)
            pooled.append(out.sum(-1))
        return torch.cat(pooled, dim=1)

    grad_out = torch.randn(40, cin.out_dim, dtype=torch.float64)
    ref = reference(x)
    ref_grads = torch.autograd.grad(ref, [x, *cin.parameters()], grad_out)
    monkeypatch.setattr("recnas.baselines.interactions._CONTRACT_BLOCK", 64)  # 280 columns: several blocks
    out = cin(x)
    grads = torch.autograd.grad(out, [x, *cin.parameters()], grad_out)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-12, rtol=0)


def test_bilinear_contract_gradcheck(monkeypatch):
    from recnas.baselines.interactions import bilinear_contract

    monkeypatch.setattr("recnas.baselines.interactions._CONTRACT_BLOCK", 64)  # blocks of max(64, 64 // 6) columns
    torch.manual_seed(0)
    a = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)  # O=3, K=2
    p = torch.randn(4, 300, dtype=torch.float64, requires_grad=True)  # 300 > one block of 64
    q = torch.randn(2, 300, dtype=torch.float64, requires_grad=True)
    plain = ((a @ p).view(3, 2, -1) * q).sum(1)
    torch.testing.assert_close(bilinear_contract(a, p, q), plain, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(bilinear_contract, (a, p, q))


def test_interacting_layer_is_unscaled_softmax_attention():
    torch.manual_seed(0)
    layer = InteractingLayer(4, heads=2, head_dim=3).double()
    x = torch.randn(5, 6, 4, dtype=torch.float64)
    q, k, v = layer.qkv(x).view(5, 6, 3, 2, 3).permute(2, 0, 3, 1, 4)
    ref = (torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v).transpose(1, 2).reshape(5, 6, 6)  # no 1/sqrt(d)
    assert torch.allclose(layer(x), torch.relu(ref + layer.res(x)), atol=1e-12)


def test_hooked_cin_convolutions_are_called_and_compute_the_same():
    """Profiler and quantisation hooks must see every CIN layer, whatever order is cheapest."""
    torch.manual_seed(0)
    cin, x = CIN(6, [4, 4]).double(), torch.randn(3, 6, 5, dtype=torch.float64)
    ref = cin(x)
    calls = []
    handles = [conv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape)) for conv in cin.convs]
    try:
        torch.testing.assert_close(cin(x), ref)
    finally:
        for h in handles:
            h.remove()
    assert calls == [(3, 36, 5), (3, 12, 5)]  # outer products of 6 (then 2) maps with 6 fields


def test_cin_split_half_output_width():
    assert CIN(4, [6, 4], split_half=True).out_dim == 3 + 4
    assert CIN(4, [6, 4], split_half=False).out_dim == 10
    assert CIN(4, [6, 4])(torch.randn(2, 4, 3)).shape == (2, 7)


@pytest.mark.parametrize(
    "name,hp,needle",
    [
        ("nope", {}, "available: lr, dlrm"),
        # worded like every config (recnas.configs.validate), the baseline named first
        ("deepfm", {"mlpp": [8]}, "deepfm hyper-parameters: unknown key 'mlpp'; valid keys: embed_dim, mlp, dropout, batch_norm."),
        ("lr", {"embed_dim": 4}, "lr hyper-parameters: unknown key 'embed_dim'; valid keys: none."),
        ("deepfm", {"dropout": 1.5}, "deepfm hyper-parameters: key 'dropout': Input should be less than 1 (got 1.5)"),
        ("deepfm", {"mlp": ["64"]}, "key 'mlp.0': must be a number, not \"64\""),  # was read as 64
        ("deepfm", {"embed_dim": True}, "key 'embed_dim': must be a number, not true"),  # was read as 1
        # read as 1, it failed dlrm's own check: "bottom_mlp must end in embed_dim (1)"
        ("dlrm", {"embed_dim": True}, "dlrm hyper-parameters: key 'embed_dim': must be a number, not true."),
        ("dlrm", {"embed_dim": "8", "bottom_mlp": [8]}, "dlrm hyper-parameters: key 'embed_dim': must be a number, not \"8\"."),
        ("dlrm", {"embed_dim": 8}, "dlrm hyper-parameters: bottom_mlp must end in embed_dim (8)"),  # a model-level error names the baseline
        ("deepfm", {"dropout": 1.5}, "'dropout'"),
        ("dcnv2", {"structure": "diagonal"}, "'structure'"),
        ("dcnv2", {"cross_layers": 0}, "'cross_layers'"),
        ("autoint", {"heads": "two"}, "'heads'"),
        ("deepfm", {"mlp": [8, -1]}, "'mlp.1'"),
        ("dlrm", {"embed_dim": 8}, "bottom_mlp must end in embed_dim (8)"),
        ("xdeepfm", {"cin": [5, 4]}, "even size"),
        ("xdeepfm", {"cin": []}, "at least one layer"),
    ],
)
def test_bad_name_or_hparam_is_config_error(name, hp, needle):
    with pytest.raises(ConfigError) as info:
        build_baseline(name, make_meta(2), **hp)
    assert needle in str(info.value)
    if name in BASELINES:
        assert "Allowed:" in str(info.value)


def test_unusable_inputs_are_clear_errors():
    with pytest.raises(DataError, match="no categorical fields"):
        build_baseline("deepfm", make_meta(2, vocab=[]))
    with pytest.raises(ConfigError, match="interaction='cat'"):
        build_baseline("dlrm", make_meta(0, vocab=[5]), **TINY["dlrm"])
    build_baseline("dlrm", make_meta(0, vocab=[5]), **{**TINY["dlrm"], "interaction": "cat"})
    model = build_baseline("deepfm", make_meta(2), **TINY["deepfm"])
    dense, sparse = random_batch(make_meta(2))
    with pytest.raises(DataError, match=r"expected dense \[B, 2\] and sparse \[B, 3\]"):
        model(dense, sparse[:, :2])


# -- learning ------------------------------------------------------------------------------


def train_and_eval(model: torch.nn.Module, store, epochs: int = 8, lr: float = 0.01, seed: int = 0) -> float:
    """Minimal Adam loop (stand-in for recnas.train.Trainer); returns held-out (val+test) log loss."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = BatchLoader(store.split("train"), batch_size=128, seed=seed)
    model.train()
    for _ in range(epochs):
        for b in loader:
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(b.dense, b.sparse), b.label).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        losses = []
        for split in ("val", "test"):
            a = store.split(split)
            dense, sparse = torch.from_numpy(np.array(a.dense)), torch.from_numpy(np.array(a.sparse)).long()
            y = torch.from_numpy(np.array(a.label))
            losses.append(F.binary_cross_entropy_with_logits(model(dense, sparse), y, reduction="sum"))
        return float(sum(losses)) / (len(store.split("val")) + len(store.split("test")))


@pytest.fixture(scope="module", params=[2, 0], ids=["dense", "no-dense"])
def planted_store(request, tmp_path_factory):
    """Label = [dense_0] +/- 1.5 by parity of (C1, C2): a pairwise interaction LR cannot express."""
    path = tmp_path_factory.mktemp("planted") / "s"
    return make_tiny_store(path, rows=4000, n_dense=request.param, vocab_sizes=(4, 6, 5, 3), seed=1)


@pytest.fixture(scope="module")
def lr_loss(planted_store):
    torch.manual_seed(0)
    return train_and_eval(build_baseline("lr", planted_store.meta), planted_store)


@pytest.mark.parametrize("name", [n for n in BASELINES if n != "lr"])
def test_beats_logistic_regression_on_planted_interactions(name, planted_store, lr_loss):
    torch.manual_seed(0)
    loss = train_and_eval(build_baseline(name, planted_store.meta, **TINY[name]), planted_store)
    assert loss < lr_loss - 0.1, f"{name}: held-out log loss {loss:.4f} vs lr {lr_loss:.4f}"


# -- what the docs tell users to build -------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _fuxictr_cin(cin: CIN, x0: torch.Tensor) -> torch.Tensor:
    """FuxiCTR's CompressedInteractionNet (what BARS ran): every layer's maps are pooled and all
    of them go on to the next layer, no split. (FuxiCTR orders the products field-major, this
    code map-major: the same network with its convolution's input channels permuted.)"""
    h, pooled = x0, []
    for conv in cin.convs:
        h = conv(torch.einsum("bmd,bhd->bmhd", h, x0).flatten(1, 2))
        pooled.append(h.sum(-1))
    return torch.cat(pooled, dim=1)


def test_docs_bars_xdeepfm_recipe_builds_the_cin_bars_ran():
    """docs/baselines.md's hyper-parameters for BARS's xDeepFM must give FuxiCTR's CIN: with the
    split (our default) CIN [16, 16] pools 24 maps and its second layer reads 8 x F products,
    where BARS's pools 32 and reads 16 x F."""
    m = re.search(r'build_baseline\("xdeepfm", meta, ([^)]*)\)', (DOCS / "baselines.md").read_text())
    call = ast.parse(f"f({m.group(1)})", mode="eval").body
    hp = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert hp["cin"] == [16, 16] and hp["embed_dim"] == 10
    meta = make_meta(13, [10] * 26)
    model = build_baseline("xdeepfm", meta, **hp).double()
    assert model.cin.out_dim == 32
    assert [c.in_channels for c in model.cin.convs] == [39 * 39, 16 * 39]
    x0 = torch.randn(3, 39, 10, dtype=torch.float64)
    torch.testing.assert_close(model.cin(x0), _fuxictr_cin(model.cin, x0))


def test_docs_name_every_shipped_job_whose_searched_tables_are_wider_than_the_baselines():
    """docs/baselines.md said every model of a job had 16-wide tables; the 1M-row GPU configs give
    the searched model 32-wide ones while the baselines keep their 16. Each shipped job config
    where the widths differ must be named in the paragraph on the embedding width."""
    import yaml

    text = (DOCS / "baselines.md").read_text()
    paragraph = text[text.index("Embedding dimension") :].split("\n\n")[0]
    differ = []
    for path in sorted((DOCS.parent / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text()) or {}
        if "space_overrides" not in cfg and "baseline_hparams" not in cfg:
            continue  # a training config, not a search job
        searched = (cfg.get("space_overrides") or {}).get("emb_dim", 16)  # both presets' spaces are 16 wide
        hparams = cfg.get("baseline_hparams") or {}
        widths = {hparams.get(n, {}).get("embed_dim", default_hparams(n)["embed_dim"]) for n in BASELINES if n != "lr"}
        if widths != {searched}:
            differ.append(path.name)
    assert differ  # the 1M-row GPU configs, as shipped
    missing = [name for name in differ if f"configs/{name}" not in paragraph]
    assert not missing, f"docs/baselines.md does not say that these jobs' baselines have narrower tables: {missing}"


# -- each model's logit against its paper's formula, written out term by term -----------------


def _perturbed(name: str, meta: DatasetMeta, **hp):
    torch.manual_seed(0)
    model = build_baseline(name, meta, **hp)
    with torch.no_grad():  # away from the tiny init, so every term counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.double().eval()


def _fields(model, dense, sparse):
    emb = model.fields.sparse
    return torch.cat([emb.weight[sparse + emb.offsets], dense.unsqueeze(-1) * model.fields.dense.weight], dim=1)


def _first_order(model, dense, sparse):
    ids = model.linear.ids
    return ids.weight[sparse + ids.offsets].squeeze(-1).sum(1) + dense @ model.linear.dense.weight.squeeze(0) + model.linear.bias


@pytest.fixture
def float64_batch():
    meta = make_meta(2)
    dense, sparse = random_batch(meta, b=6)
    return meta, dense.double(), sparse


def test_deepfm_is_first_order_plus_every_pairs_dot_plus_mlp(float64_batch):
    meta, dense, sparse = float64_batch
    m = _perturbed("deepfm", meta, embed_dim=4, mlp=[5])
    x = _fields(m, dense, sparse)
    pairs = sum((x[:, i] * x[:, j]).sum(-1) for i in range(x.shape[1]) for j in range(i))
    ref = _first_order(m, dense, sparse) + pairs + m.mlp(x.flatten(1)).squeeze(-1)
    torch.testing.assert_close(m(dense, sparse), ref)


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
@pytest.mark.parametrize("low_rank", [None, 3])
def test_dcnv2_cross_layers_are_x0_times_wx_plus_b_plus_x(float64_batch, structure, low_rank):
    meta, dense, sparse = float64_batch
    m = _perturbed("dcnv2", meta, embed_dim=4, mlp=[5], cross_layers=2, structure=structure, low_rank=low_rank)
    x0 = _fields(m, dense, sparse).flatten(1)
    x = x0
    for layer in m.cross.layers:
        w, b = (layer.weight, layer.bias) if low_rank is None else (layer[1].weight @ layer[0].weight, layer[1].bias)
        x = x0 * (x @ w.T + b) + x
    h = m.mlp(x) if structure == "stacked" else torch.cat([x, m.mlp(x0)], dim=1)
    torch.testing.assert_close(m(dense, sparse), m.head(h).squeeze(-1))


def test_autoint_heads_attend_with_a_projected_residual(float64_batch):
    meta, dense, sparse = float64_batch
    m = _perturbed("autoint", meta, embed_dim=4, attention_layers=2, heads=2, attention_dim=3, mlp=[5])
    e = _fields(m, dense, sparse)
    for layer in m.attention:
        wq, wk, wv = layer.qkv.weight.split(6)
        heads = []
        for h in range(2):  # the paper's Eq. 5-6 per head: softmax(<W_q e_m, W_k e_k>) W_v e_k
            rows = slice(3 * h, 3 * h + 3)
            q, k, v = e @ wq[rows].T, e @ wk[rows].T, e @ wv[rows].T
            heads.append(torch.softmax(q @ k.transpose(1, 2), -1) @ v)
        e = torch.relu(torch.cat(heads, -1) + e @ layer.res.weight.T)  # Eq. 7-8
    ref = m.head(e.flatten(1)).squeeze(-1) + m.mlp(_fields(m, dense, sparse).flatten(1)).squeeze(-1)
    torch.testing.assert_close(m(dense, sparse), ref)


@pytest.mark.parametrize("split", [True, False])
def test_xdeepfm_is_first_order_plus_cin_eq6_plus_mlp(float64_batch, split):
    meta, dense, sparse = float64_batch
    m = _perturbed("xdeepfm", meta, embed_dim=4, cin=[4, 3], cin_split_half=split, mlp=[5])
    x0 = _fields(m, dense, sparse)
    n_f, xk, pooled = x0.shape[1], x0, []
    for conv, half in zip(m.cin.convs, m.cin.split):
        w = conv.weight.view(conv.out_channels, xk.shape[1], n_f)  # W^{k,h}_{i,j} of Eq. 6
        z = torch.stack([sum(w[o, i, j] * xk[:, i] * x0[:, j] for i in range(xk.shape[1]) for j in range(n_f)) + conv.bias[o] for o in range(conv.out_channels)], 1)
        xk, out = (z[:, :half], z[:, half:]) if half else (z, z)
        pooled.append(out.sum(-1))
    ref = _first_order(m, dense, sparse) + m.cin_head(torch.cat(pooled, 1)).squeeze(-1) + m.mlp(x0.flatten(1)).squeeze(-1)
    torch.testing.assert_close(m(dense, sparse), ref)


def test_dlrm_interaction_is_the_reference_codes(float64_batch):
    """facebookresearch/dlrm `interact_features`: T = [bottom output, embeddings], Z = T T^T, the
    pairs li/lj of the strict lower triangle row by row, then [bottom output, Z[li, lj]]."""
    meta, dense, sparse = float64_batch
    m = _perturbed("dlrm", meta, embed_dim=4, bottom_mlp=[6, 4], top_mlp=[5])
    z = m.bottom(dense)
    t = torch.cat([z.unsqueeze(1), m.embedding.weight[sparse + m.embedding.offsets]], dim=1)
    n = t.shape[1]
    li, lj = [i for i in range(n) for j in range(i)], [j for i in range(n) for j in range(i)]
    ref = m.top(torch.cat([z, (t @ t.transpose(1, 2))[:, li, lj]], dim=1)).squeeze(-1)
    torch.testing.assert_close(m(dense, sparse), ref)


def test_the_cpu_presets_xdeepfm_is_bars_network():
    """The default job's xDeepFM is BARS Criteo_x1's: CIN [16, 16] pooling all 32 maps (FuxiCTR's
    CIN, no split), which beat the split CIN on every seed measured (docs/benchmarks.md); with the
    split the same sizes pool 24."""
    from recnas.search.job import load_job_config

    hp = load_job_config("cpu").baseline_hparams["xdeepfm"]
    model = build_baseline("xdeepfm", make_meta(13, [10] * 26), **hp)  # Criteo-shaped
    assert model.cin.out_dim == 32 and model.hparams["cin"] == [16, 16]


def test_the_gpu_presets_xdeepfm_keeps_the_papers_sizes_without_the_split():
    """The `gpu` preset's xDeepFM is the paper's CIN [200, 200, 200] computed as FuxiCTR's CIN
    (every map pooled and sent on: 600 pooled maps, not the split's 100 + 100 + 200), which was
    better at 1M rows (docs/benchmarks.md)."""
    from recnas.search.job import load_job_config

    hp = load_job_config("gpu").baseline_hparams["xdeepfm"]
    model = build_baseline("xdeepfm", make_meta(13, [10] * 26), **hp)  # Criteo-shaped
    assert model.cin.out_dim == 600 and model.hparams["cin"] == [200, 200, 200]


def test_mlp_is_linear_batchnorm_relu_dropout_per_hidden_width_then_a_linear_head():
    """The layer order the docstring gives, and the written-out form of a two-layer MLP; `out_dim`
    is the width forward returns (mutation round 4: L01 L02 L07 L08)."""
    from recnas.baselines.layers import MLP

    mlp = MLP(3, [4, 5], out_dim=2, dropout=0.1, batch_norm=True)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"] and mlp.out_dim == 2
    assert MLP(3, [4, 5]).out_dim == 5 and MLP(3, []).out_dim == 3 and MLP(3, [], out_dim=1).out_dim == 1
    plain = MLP(3, [4], out_dim=1).double()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    l1, l2 = plain.net[0], plain.net[2]
    want = torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    torch.testing.assert_close(plain(x), want)
    assert (torch.relu(x @ l1.weight.T + l1.bias) == 0).any()  # the ReLU cuts something here


def test_dlrm_puts_dropout_and_batch_norm_in_its_top_mlp_only():
    """`dropout` / `batch_norm` reach the top MLP (BARS's), not the bottom one (mutation round 4, B05)."""
    m = build_baseline("dlrm", make_meta(2), **{**TINY["dlrm"], "dropout": 0.1, "batch_norm": True})
    assert [type(x).__name__ for x in m.top.net] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert [type(x).__name__ for x in m.bottom.net] == ["Linear", "ReLU", "Linear", "ReLU"]


def test_deepfm_without_an_mlp_is_a_plain_factorisation_machine(float64_batch):
    """`mlp=[]`: first order plus every pair's dot product, no MLP logit (mutation round 4, B08)."""
    meta, dense, sparse = float64_batch
    m = _perturbed("deepfm", meta, embed_dim=4, mlp=[])
    assert m.mlp is None
    x = _fields(m, dense, sparse)
    pairs = sum((x[:, i] * x[:, j]).sum(-1) for i in range(x.shape[1]) for j in range(i))
    torch.testing.assert_close(m(dense, sparse), _first_order(m, dense, sparse) + pairs)


def test_dcnv2_and_autoint_parameter_counts_by_hand():
    """2 dense + VOCAB [3, 4, 5] at embed_dim 4: 5 fields, 20 flat inputs, 56 embedding weights.
    Pins the number of cross layers (B11), AutoInt's bias-free attention and residual projections
    and its biased head (I18, B17), and `residual=False` reaching every layer (B13; round 4)."""
    meta, emb = make_meta(2), (3 + 4 + 5) * 4 + 2 * 4
    dcn = build_baseline("dcnv2", meta, embed_dim=4, mlp=[5], cross_layers=3)
    assert len(dcn.cross.layers) == 3
    assert n_params(dcn) == emb + 3 * (20 * 20 + 20) + (20 * 5 + 5) + (5 + 20 + 1)
    low = build_baseline("dcnv2", meta, embed_dim=4, mlp=[5], cross_layers=2, low_rank=3, structure="stacked")
    assert n_params(low) == emb + 2 * (20 * 3 + 3 * 20 + 20) + (20 * 5 + 5) + (5 + 1)
    hp = dict(embed_dim=4, attention_layers=2, heads=2, attention_dim=3)
    layers = (4 * 18 + 4 * 6) + (6 * 18 + 6 * 6)  # qkv and residual projections, no biases
    assert n_params(build_baseline("autoint", meta, **hp)) == emb + layers + (5 * 6 + 1)
    plain = build_baseline("autoint", meta, **hp, residual=False)
    assert all(layer.res is None for layer in plain.attention)
    assert n_params(plain) == emb + 4 * 18 + 6 * 18 + (5 * 6 + 1)


def test_xdeepfm_parameter_count_by_hand():
    """2 dense + VOCAB [3, 4, 5] at embed_dim 4, CIN [4, 3] split, mlp [5]: fields 56, first order
    12 + 2 + 1, conv 0 5*5 -> 4, conv 1 2*5 -> 3, a biased 5 -> 1 CIN head, MLP 20 -> 5 -> 1
    (mutation round 4, B18)."""
    m = build_baseline("xdeepfm", make_meta(2), embed_dim=4, cin=[4, 3], mlp=[5])
    assert n_params(m) == 56 + (12 + 2 + 1) + (25 * 4 + 4) + (10 * 3 + 3) + (5 + 1) + (20 * 5 + 5 + 5 + 1)


def test_bilinear_contract_off_the_cpu_reduces_over_k():
    """Off the CPU bilinear_contract is the plain formula; on the meta device (no values) its
    shape still says which axis it sums: [O, N], not [K, N] (mutation round 4, I22)."""
    from recnas.baselines.interactions import bilinear_contract

    a, p, q = torch.randn(3 * 2, 4), torch.randn(4, 7), torch.randn(2, 7)
    assert bilinear_contract(a, p, q).shape == bilinear_contract(a.to("meta"), p.to("meta"), q.to("meta")).shape == (3, 7)
