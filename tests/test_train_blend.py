"""Deterministic blending: realized fractions track the weights at every point; curricula; purity."""

import numpy as np
import pytest

from hybridlm.train.blend import Blend, curriculum_weights


@pytest.mark.parametrize("weights", [[0.6, 0.4], [0.5, 0.3, 0.2], [1, 1, 1, 7]])
def test_fractions_match_weights_at_every_point(weights):
    w = np.asarray(weights, float) / sum(weights)
    src = Blend(weights).sources(5000)
    counts = np.zeros(len(w))
    for i, k in enumerate(src):
        counts[k] += 1
        # every prefix is within one sample of its target share
        assert np.all(np.abs(counts - w * (i + 1)) <= 1.0 + 1e-9), (i, counts, w * (i + 1))


def test_megatron_rule_small_case():
    # 0.6/0.4: the source furthest below target wins, ties go to the lower index
    assert Blend([0.6, 0.4]).sources(10).tolist() == [0, 1, 0, 1, 0, 0, 1, 0, 1, 0]


def test_assign_counts_within_source_and_is_pure():
    b1, b2 = Blend([0.7, 0.3]), Blend([0.7, 0.3])
    seen = {0: 0, 1: 0}
    for i in range(300):
        k, j = b1.assign(i)
        assert j == seen[k]
        seen[k] += 1
    assert [b2.assign(i) for i in range(299, -1, -1)] == [b1.assign(i) for i in range(299, -1, -1)]


def test_curriculum_cumulative_targets():
    points = [(0, [1.0, 0.0]), (10, [0.0, 1.0])]
    at = curriculum_weights(points)
    assert at(5).tolist() == [0.5, 0.5] and at(20).tolist() == [0.0, 1.0]
    b = Blend(at, samples_per_step=8)
    src = b.sources(8 * 30)
    # first step only source 0; after step 10 only source 1
    assert set(src[:8].tolist()) == {0}
    assert set(src[8 * 12 :].tolist()) == {1}
    # the realized count of source 0 tracks the integral of its weight
    target0 = sum(at(i // 8)[0] for i in range(8 * 30))
    assert abs((src == 0).sum() - target0) <= 1.0
