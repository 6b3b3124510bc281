"""Weight sharing across embedding widths, compact mixed-width tables and exact inheritance."""

import numpy as np
import pytest
import torch

from recnas.data.schema import DatasetMeta
from recnas.embedding.model import EmbeddingSizeNet
from recnas.errors import ConfigError
from recnas.ops.embedding import FieldEmbedding, MixedWidthEmbedding, ProjectedFieldEmbedding
from recnas.space import Architecture, get_space
from recnas.space.samplers import random_architecture
from recnas.supernet import Subnet, Supernet

VOCAB = [5, 7, 3, 9]


def ids(b=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, v, (b,), generator=g) for v in VOCAB], 1)


def meta(n_dense=2):
    return DatasetMeta(name="t", dense_names=[f"I{i}" for i in range(n_dense)], cat_names=[f"C{i}" for i in range(len(VOCAB))], vocab_sizes=VOCAB, rows={})


def test_width_w_lookup_is_first_w_columns_and_only_they_get_gradient():
    emb = FieldEmbedding(VOCAB, 16)
    sparse = ids()
    full = emb(sparse)
    widths = torch.tensor([4, 4, 4, 4])
    out = emb(sparse, widths)
    torch.testing.assert_close(out[..., :4], full[..., :4], rtol=0, atol=0)
    assert (out[..., 4:] == 0).all()
    out.pow(2).sum().backward()
    assert emb.weight.grad[:, :4].abs().sum() > 0
    assert (emb.weight.grad[:, 4:] == 0).all()


def test_projected_supernet_width_masks_touch_only_leading_columns_and_rows():
    emb = ProjectedFieldEmbedding(VOCAB, 8, out_dim=5)
    widths = torch.tensor([2, 8, 4, 2])
    emb(ids(), widths).pow(2).sum().backward()
    for f, w in enumerate(widths.tolist()):
        lo, hi = int(emb.table.offsets[f]), int(emb.table.offsets[f]) + VOCAB[f]
        rows = emb.table.weight.grad[lo:hi]
        assert rows[:, :w].abs().sum() > 0 and (rows[:, w:] == 0).all()
        assert (emb.proj.grad[f, w:] == 0).all() and emb.proj.grad[f, :w].abs().sum() > 0


def test_mixed_width_tables_are_compact_and_reproduce_the_masked_supernet():
    torch.manual_seed(0)
    sup = ProjectedFieldEmbedding(VOCAB, 8, out_dim=5)
    widths = [2, 8, 4, 2]
    compact = MixedWidthEmbedding(VOCAB, widths, out_dim=5)
    assert compact.table_params == sum(v * w for v, w in zip(VOCAB, widths))
    assert sum(t.weight.numel() for t in compact.tables) == compact.table_params
    sparse = ids()
    assert not torch.allclose(compact(sparse), sup(sparse, torch.tensor(widths)))
    compact.inherit_from(sup)
    torch.testing.assert_close(compact(sparse), sup(sparse, torch.tensor(widths)))


def test_identity_projection_equals_plain_width_masks():
    plain = FieldEmbedding(VOCAB, 8)
    compact = MixedWidthEmbedding(VOCAB, [3, 8, 1, 5], out_dim=8, identity=True)
    compact.inherit_from(plain)
    sparse = ids()
    torch.testing.assert_close(compact(sparse), plain(sparse, torch.tensor([3, 8, 1, 5])), rtol=0, atol=0)


@pytest.mark.parametrize("widths, match", [([2, 2], "widths for"), ([2, 0, 2, 2], "positive"), ([2, 9, 2, 2], "identity")])
def test_mixed_width_rejects_bad_widths(widths, match):
    with pytest.raises(ValueError, match=match):
        MixedWidthEmbedding(VOCAB, widths, out_dim=8, identity=True)


def test_inheriting_from_a_narrower_table_fails_clearly():
    with pytest.raises(ValueError, match="width 4"):
        MixedWidthEmbedding(VOCAB, [2, 8, 2, 2], out_dim=8).inherit_from(FieldEmbedding(VOCAB, 4))


def test_embedding_size_net_compact_model_inherits_the_supernet_exactly():
    torch.manual_seed(0)
    m = meta()
    sup = EmbeddingSizeNet(m, max_width=16, proj_dim=6, hidden=(8,))
    dense, sparse = torch.randn(12, 2), ids()
    for widths in ([2, 16, 4, 8], [16, 16, 16, 16], [2, 2, 2, 2]):
        sub = EmbeddingSizeNet(m, widths=widths, proj_dim=6, hidden=(8,)).inherit_from(sup)
        torch.testing.assert_close(sub(dense, sparse), sup(dense, sparse, widths))
    with pytest.raises(ValueError, match="own widths"):
        sub(dense, sparse, [4, 4, 4, 4])
    with pytest.raises(ValueError, match="exactly one of max_width .* got both"):
        EmbeddingSizeNet(m, max_width=16, widths=[2, 2, 2, 2])


def test_nasrec_subnet_with_emb_dims_is_compact_and_inherits_exactly():
    space, m = get_space("small-tiny"), meta(3)
    net = Supernet(space, m)
    dense, sparse = torch.randn(12, 3), ids()
    base = random_architecture(np.random.default_rng(0), space)
    arch = Architecture(blocks=base.blocks, emb_dims=(2, 8, 4, 1))
    sub = Subnet.from_architecture(arch, space, m, supernet=net)
    torch.testing.assert_close(sub(dense, sparse), net(dense, sparse, arch))
    assert sub.embedding.table_params == 5 * 2 + 7 * 8 + 3 * 4 + 9 * 1 < net.embedding.weight.numel()
    plain = Subnet.from_architecture(base, space, m, supernet=net)  # no emb_dims: one full table, as before
    assert isinstance(plain.embedding, FieldEmbedding)
    torch.testing.assert_close(plain(dense, sparse), net(dense, sparse, base), rtol=0, atol=0)


def test_nasrec_emb_dims_wider_than_space_is_a_config_error():
    space, m = get_space("small-tiny"), meta(3)
    base = random_architecture(np.random.default_rng(0), space)
    with pytest.raises(ConfigError, match="emb_dims"):
        Subnet(Architecture(blocks=base.blocks, emb_dims=(2, 64, 4, 1)), space, m)


def test_field_embedding_starts_at_std_init_std_or_fan_uniform_per_field():
    """Default init N(0, 0.01) (M09); `fan_uniform_` draws field i from U(+-sqrt(1/n_i)), each
    field to its own bound (M01, M02; mutation round 4)."""
    torch.manual_seed(0)
    emb = FieldEmbedding([4, 100], 16)
    assert 0.008 < emb.weight.std() < 0.012
    emb.fan_uniform_()
    for rows, n in ((emb.weight[:4], 4), (emb.weight[4:], 100)):
        assert rows.abs().max() <= n**-0.5 and rows.abs().max() > 0.9 * n**-0.5


def test_a_vocabulary_of_no_ids_is_refused():
    """Every field needs at least one id (mutation round 4, M12)."""
    with pytest.raises(ValueError, match="every vocabulary size must be positive"):
        FieldEmbedding([3, 0], 4)


def test_projected_embedding_starts_at_unit_output_scale_and_inherits_only_its_out_dim():
    """The per-field projection starts N(0, 1/max_width) (M13); a compact embedding refuses a
    source projecting to another width with a ValueError, not a torch copy error (M08; round 4);
    a compact embedding's random projection starts at the same scale (M15)."""
    torch.manual_seed(0)
    sup = ProjectedFieldEmbedding(VOCAB, 16, out_dim=32)
    assert 0.2 < sup.proj.std() < 0.3  # 1/sqrt(16) = 0.25
    compact = MixedWidthEmbedding(VOCAB, [16, 16, 16, 16], out_dim=32)  # a random projection: the same scale (M15)
    assert 0.2 < compact.projs[0].std() < 0.3
    with pytest.raises(ValueError, match="source projects to 32, this embedding to 5"):
        MixedWidthEmbedding(VOCAB, [2, 8, 4, 2], out_dim=5).inherit_from(sup)


def test_field_embedding_state_dict_holds_only_the_table():
    """The offsets are derived from the vocabulary sizes and kept out of the state dict, so
    checkpoints hold the weights alone (mutation round 4, M14)."""
    assert list(FieldEmbedding(VOCAB, 4).state_dict()) == ["weight"]
    assert list(MixedWidthEmbedding(VOCAB, [2, 3, 2, 3], out_dim=4).state_dict()) == ["tables.0.weight", "tables.1.weight", "projs.0", "projs.1"]
