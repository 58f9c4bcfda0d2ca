"""The generation audit on builtin:tiny finds what was planted (Somepalli et al. 2023's pattern).

Measured effects with margins: the planted artwork replicates from its keyword and related
prompts far more than from the other kinds, control prompts do not replicate, the object keyword
brings the flag significantly more often than controls, and cliques flag the artwork, no control.
"""

import pytest

from sdguard.models.builtin import tiny_available

pytestmark = pytest.mark.skipif(not tiny_available(), reason="builtin:tiny weights are not in the package")


@pytest.fixture(scope="module")
def audit(default_world, tmp_path_factory):
    from sdguard.audit.dataset_replication import audit_data
    from sdguard.audit.generation_replication import audit_generations

    tmp = tmp_path_factory.mktemp("gat")
    audit_data(default_world, ["van gogh"], out=tmp / "data")  # the clusters behind the keyword
    report = audit_generations("builtin:tiny", str(default_world), clusters=str(tmp / "data"), out=str(tmp / "gen"),
                               n=16, batch_size=64, top_clusters=1, controls=3, object_keyword="astronaut",
                               object_name="flag", detector="world")
    return report.results


def _suite(results, word):
    rows = [r for r in results["prompts"] if r["cluster"] is not None and word in r["prompt"].split()
            and r["kind"] == "keywords"]
    assert rows, f"no cluster suite for '{word}'"
    cluster = rows[0]["cluster"]
    return {r["kind"]: r for r in results["prompts"] if r["cluster"] == cluster}


def test_planted_artwork_replicates_by_prompt_kind(audit):
    suite = _suite(audit, "gogh")
    assert suite["keywords"]["replication_rate"] >= 0.5
    assert suite["short_related"]["replication_rate"] >= 0.5
    strongest = max(suite[k]["replication_rate"] for k in ("keywords", "short_related", "long_related"))
    assert strongest >= suite["long_without_keyword"]["replication_rate"] + 0.3


def test_unrelated_captions_with_the_keywords_still_replicate(audit):
    """The study's third kind: a training caption of something else plus the keywords. Pooled over
    its prompts it replicates measurably (Wilson interval above 0) and above the controls, yet
    less than the keywords alone."""
    from sdguard.audit.stats import wilson_interval

    cluster = _suite(audit, "gogh")["keywords"]["cluster"]
    rows = [r for r in audit["prompts"] if r["cluster"] == cluster and r["kind"] == "unrelated_with_keywords"]
    controls = [r for r in audit["prompts"] if r["kind"] == "control"]
    assert len(rows) >= 3
    hits, n = sum(round(r["replication_rate"] * r["n"]) for r in rows), sum(r["n"] for r in rows)
    control_rate = sum(r["replication_rate"] * r["n"] for r in controls) / sum(r["n"] for r in controls)
    low, _ = wilson_interval(hits, n)
    assert low > 0 and hits / n >= control_rate + 0.1, rows
    assert hits / n < _suite(audit, "gogh")["keywords"]["replication_rate"], rows


def test_controls_do_not_replicate(audit):
    controls = [r for r in audit["prompts"] if r["kind"] == "control"]
    assert len(controls) == 3
    # about 0: controls are matched against every training image, and simple scenes look alike
    assert sum(r["replication_rate"] for r in controls) / len(controls) <= 0.1, controls
    artwork = _suite(audit, "gogh")["keywords"]["replication_rate"]
    assert all(r["replication_rate"] <= artwork - 0.5 for r in controls)


def test_cliques_flag_no_control_prompt(audit):
    # builtin:tiny draws a fully specified 32-pixel scene nearly the same from every seed, so
    # Carlini et al.'s 0.15 (for 512-pixel images) would put a control's generations in one
    # clique; the distance calibrated on reference prompts must be tighter and spare them
    clique = audit["clique"]
    assert clique["source"] == "calibrated" and clique["value"] < 0.15, clique
    assert not set(clique["prompts"]) & {r["prompt"] for r in audit["prompts"]}  # references are not audited
    controls = [r for r in audit["prompts"] if r["kind"] == "control"]
    flagged = [(r["prompt"], r["clique_size"]) for r in controls if r["extraction_flagged"]]
    assert not flagged, (flagged, clique)


def test_object_keyword_brings_the_object(audit):
    o = audit["object"]
    assert o["keyword_share"] >= 3 * o["control_share"] and o["keyword_share"] >= 0.1, o
    assert o["fisher_p"] < 0.01, o


def test_cliques_flag_the_planted_artwork(audit):
    suite = _suite(audit, "gogh")
    assert suite["keywords"]["extraction_flagged"] and suite["keywords"]["clique_size"] >= 10


def test_a_prompt_file_is_judged_at_the_nearest_clusters_threshold(default_world, tmp_path):
    # without --clusters, a user's prompt is compared with the whole training set; each generation at
    # the threshold calibrated for its nearest training image's cluster (the embedder's default 0.9
    # missed this model's blurry 32-pixel copies: replication 0.09 for the memorized artwork)
    from sdguard.audit.generation_replication import audit_generations

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("van gogh starry night\ncontrol\ta simple drawing of a red ring at the bottom over a white background\n")
    rows = audit_generations("builtin:tiny", str(default_world), prompts=str(prompts), out=str(tmp_path / "out"), n=16,
                             batch_size=32, reference_prompts=2).results["prompts"]
    user, control = rows
    assert user["kind"] == "user" and user["replication_rate"] >= 0.5 and user["threshold"] < 0.9, user
    assert control["replication_rate"] <= 0.1, control
