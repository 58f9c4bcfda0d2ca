"""builtin:tiny really memorizes what was planted in its world, and still generalizes.

Measured on generations of the shipped model over 64 seeds (Somepalli et al. 2023's cases):
the thresholds are the issue's acceptance criteria, never figures copied from a run.
"""

import pytest
from scipy.stats import spearmanr

from sdguard.models.builtin import tiny_available

#: slow (about 3 minutes on 2 cores: ~1000 generations and probes fitted on the whole world): the shipped
#: weights only change when the recipe is re-run, which `python benchmarks/train_tiny.py` measures; `make bench`
#: runs these tests (`pytest -m slow`), `make test` leaves them out to stay within its 15 minutes
pytestmark = [pytest.mark.skipif(not tiny_available(), reason="builtin:tiny weights are not in the package"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def measured(default_world):
    from sdguard.audit.world_check import check_world_model
    from sdguard.data import load_world
    from sdguard.models import load_model

    return check_world_model(load_model("builtin:tiny"), load_world(default_world))


def test_most_duplicated_artwork_comes_back(measured):
    top = max(measured["artworks"], key=lambda a: a["rate"])
    assert top["replication"] >= 0.5, top


def _exclusive(measured, world):
    """Artworks whose keywords point at them alone: the co-occurrence case ("almond" +
    "blossoming") shares its keyword pair with as many other captions by design, so its keyword
    prompt does not measure the artwork's duplication rate."""
    shared = {c["dominant"] for c in world.ground_truth["cooccurrence"] if c["dominant_share"] < 0.9}
    return [a for a in measured["artworks"] if a["name"] not in shared]


def test_replication_falls_with_duplication_rate(measured, default_world):
    from sdguard.data import load_world

    arts = sorted(_exclusive(measured, load_world(default_world)), key=lambda a: -a["rate"])
    assert len(arts) >= 3
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
    # at least 80% of style-prompt generations carry the asked style, and far more than controls do
    for style in measured["styles"]:
        assert style["accuracy"] >= 0.8, style
        assert style["accuracy"] >= 4 * measured["control_styled"], style
    assert measured["control_styled"] <= 0.2


def test_held_out_combinations_are_generated_not_looked_up(measured):
    # shape, colour and position of combinations never seen in training come out far above chance
    # (pooled over two caption forms, 2 x 64 generations, one-sided binomial test)
    for attr in ("shape", "color", "position"):
        r = measured["held_out"][attr]
        assert r["accuracy"] >= 2 * r["chance"] and r["p_value"] < 1e-4, (attr, r)
