"""Corruption functions: labels are right, special tokens never change, C-RTS counts move as specified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subsetlm.recipes import objectives as obj

V, MASK = 50, 4
NORMAL = torch.arange(5, V)


def _batch(B=64, L=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[: B // 2, -6:] = 0  # padding on half the rows
    pad = ids == 0
    special = (ids < 5) | pad
    return ids, special, pad


def test_mlm_selects_15_percent_with_80_10_10_and_never_specials():
    ids, special, _ = _batch(B=256, L=64)
    inp, lab = obj.mlm_corrupt(ids, special, mask_id=MASK, normal_ids=NORMAL,
                               gen=torch.Generator().manual_seed(1))
    sel = lab != obj.IGNORE
    assert not (sel & special).any()
    assert torch.equal(inp[special], ids[special])
    assert torch.equal(lab[sel], ids[sel])
    assert abs(sel.sum().item() / (~special).sum().item() - 0.15) < 0.01
    masked = (inp == MASK) & sel
    changed = (inp != ids) & (inp != MASK) & sel
    kept = (inp == ids) & sel
    frac = [x.sum().item() / sel.sum().item() for x in (masked, changed, kept)]
    assert abs(frac[0] - 0.8) < 0.03 and abs(frac[1] - 0.1 * (1 - 1 / len(NORMAL))) < 0.03
    assert abs(frac[2] - 0.1) < 0.03
    assert torch.equal(inp[~sel], ids[~sel])  # unselected tokens untouched


def test_slm_replaces_every_selected_token_with_an_ordinary_token():
    ids, special, _ = _batch()
    inp, lab = obj.slm_corrupt(ids, special, normal_ids=NORMAL, gen=torch.Generator().manual_seed(2))
    sel = lab != obj.IGNORE
    assert not (inp == MASK).any()
    assert (inp[sel] >= 5).all()
    assert torch.equal(inp[~sel], ids[~sel])
    assert torch.equal(lab[sel], ids[sel])


def test_rts_marks_exactly_the_replaced_tokens():
    ids, special, pad = _batch()
    inp, lab = obj.rts_corrupt(ids, special, pad, normal_ids=NORMAL, gen=torch.Generator().manual_seed(3))
    assert (lab[pad] == obj.IGNORE).all()
    real = ~pad
    assert torch.equal(lab[real] == 1, (inp != ids)[real])
    assert torch.equal(inp[special], ids[special])  # specials never replaced
    assert (lab[special & ~pad] == 0).all()  # ... and labelled original
    frac = (lab == 1).sum().item() / (~special).sum().item()
    assert 0.12 < frac < 0.16


def test_mlm_bad_probability_is_a_clear_error():
    ids, special, _ = _batch()
    with pytest.raises(ValueError, match="masking probability"):
        obj.mlm_corrupt(ids, special, mask_id=MASK, normal_ids=NORMAL,
                        gen=torch.Generator(), prob=0.0)


def _clusters():
    c = np.full(V, -1, dtype=np.int32)
    c[5:] = (np.arange(5, V) % 3)  # 3 clusters
    return c


def test_crts_samples_tokens_from_the_target_cluster_and_labels_them():
    gen = obj.ClusterGenerator(_clusters())
    ids, special, pad = _batch()
    inp, lab, info = gen.corrupt(ids, special, pad, gen=torch.Generator().manual_seed(4))
    pos = info["positions"]
    assert torch.equal(gen.clusters[inp[pos]], info["target"])
    assert torch.equal(info["source"], gen.clusters[ids[pos]])
    assert torch.equal(lab[~pad] == 1, (inp != ids)[~pad])
    assert torch.equal(inp[special], ids[special])


def test_crts_count_matrix_moves_up_when_fooled_and_down_when_caught():
    gen = obj.ClusterGenerator(_clusters())
    assert torch.equal(gen.counts, torch.ones(3, 3, dtype=torch.float64))
    ids, special, pad = _batch()
    inp, lab, info = gen.corrupt(ids, special, pad, gen=torch.Generator().manual_seed(5))
    fooled = torch.zeros_like(lab)  # discriminator says "original" everywhere: fooled on every replacement
    gen.update(info, fooled, lab)
    rep = lab[info["positions"]] == 1
    expect = torch.ones(3, 3, dtype=torch.float64)
    for s, c in zip(info["source"][rep].tolist(), info["target"][rep].tolist()):
        expect[s, c] += 1
    assert torch.equal(gen.counts, expect)
    caught = lab.clamp_min(0)  # a perfect discriminator: right on every replacement
    gen.update(info, caught, lab)
    assert torch.equal(gen.counts, torch.ones(3, 3, dtype=torch.float64))


def test_crts_probabilities_follow_softmax_of_beta_minmax():
    gen = obj.ClusterGenerator(_clusters(), beta=2.0)
    gen.counts = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0], [0.0, 10.0, 5.0]], dtype=torch.float64)
    P = gen.probabilities()
    want = torch.softmax(2.0 * torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.5]],
                                            dtype=torch.float64), -1)
    assert torch.allclose(P, want)
    assert P[0].argmax() == 2 and torch.allclose(P[1], torch.full((3,), 1 / 3, dtype=torch.float64))


def test_crts_state_round_trip_and_shape_check():
    g1 = obj.ClusterGenerator(_clusters())
    g1.counts[0, 1] = 7
    g2 = obj.ClusterGenerator(_clusters())
    g2.load_state_dict(g1.state_dict())
    assert torch.equal(g1.counts, g2.counts)
    other = obj.ClusterGenerator(np.array([-1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(g1.state_dict())
