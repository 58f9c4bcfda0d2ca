"""builtin:tiny really memorizes what was planted in its world, and still generalizes.

Measured on generations of the shipped model over 64 seeds (Somepalli et al. 2023's cases):
the thresholds are the issue's acceptance criteria, never figures copied from a run.
"""

import pytest
from scipy.stats import spearmanr

from sdguard.models.builtin import tiny_available

pytestmark = pytest.mark.skipif(not tiny_available(), reason="builtin:tiny weights are not in the package")


@pytest.fixture(scope="module")
def measured(default_world):
    from sdguard.audit.world_check import check_world_model
    from sdguard.data import load_world
    from sdguard.models import load_model

    return check_world_model(load_model("builtin:tiny"), load_world(default_world))


def test_most_duplicated_artwork_comes_back(measured):
    top = max(measured["artworks"], key=lambda a: a["rate"])
    assert top["replication"] >= 0.5, top


def test_replication_falls_with_duplication_rate(measured):
    arts = sorted(measured["artworks"], key=lambda a: -a["rate"])
    rates = [a["rate"] for a in arts]
    repl = [a["replication"] for a in arts]
    rho = spearmanr(rates, repl).statistic
    assert rho > 0.5, arts
    assert repl[0] - repl[-1] >= 0.3, arts  # the rarest artwork replicates far less than the most frequent


def test_unrelated_prompts_do_not_replicate(measured):
    assert measured["control_any_artwork"] <= 0.05


def test_object_level_replication_is_significant(measured):
    obj = measured["object"]
    assert obj["keyword_share"] >= 3 * obj["control_share"] and obj["keyword_share"] > 0.05, obj
    assert obj["fisher_p"] < 0.01, obj


def test_style_prompts_carry_the_style(measured):
    for style in measured["styles"]:
        assert style["accuracy"] >= 0.8, style
    assert measured["control_styled"] <= 0.2


def test_held_out_combinations_are_generated_not_looked_up(measured):
    # shape and colour of combinations never seen in training come out far above chance;
    # position words are not learned at this scale (see the README), so they are not asserted
    for attr in ("shape", "color"):
        r = measured["held_out"][attr]
        assert r["accuracy"] >= 2.5 * r["chance"], (attr, r)
