"""creative.words: the one stop set and stemmer, and how the gate's lists and stems relate to them."""

from __future__ import annotations

import pytest

from hllm_creator.creative.copy import normalize_title
from hllm_creator.creative.facts import content_words
from hllm_creator.creative.words import CONNECTIVES, NAME_STOP, STOP, TITLE_STOP, root, stem


@pytest.mark.parametrize("word,plural,loose", [
    ("Pipettes", "pipette", "pipette"), ("boxes", "box", "box"), ("batteries", "battery", "battery"),
    ("glass", "glass", "glass"), ("cactus", "cactus", "cactu"), ("analysis", "analysis", "analysi"),
    ("Wifis", "wifis", "wifi"), ("user's", "user", "user"),
])
def test_stem_folds_plurals_and_the_gates_variant_also_takes_the_s_of_us_is(word, plural, loose):
    assert stem(word) == plural
    assert stem(word, keep_us_is=False) == loose


@pytest.mark.parametrize("a,b", [("sealing", "sealer"), ("cutting", "cut"), ("uses", "use"), ("highly", "high"),
                                 ("coils", "coil"), ("beaches", "beach")])
def test_root_matches_inflections_the_copy_test_keeps_apart(a, b):
    assert root(a) == root(b)
    if stem(a) != stem(b):
        assert normalize_title(f"Tape {a}") != normalize_title(f"Tape {b}")


def test_the_gates_lists_are_named_differences_from_the_one_stop_set():
    # a title's negator and degree words are never free: they are checked against the ad
    assert {"no", "not", "only", "most", "very"} <= STOP - CONNECTIVES
    assert {"the", "between", "x"} <= CONNECTIVES - STOP
    # the generic words of product titles are never a name
    assert {"best", "kit", "tool", "the"} <= NAME_STOP and not {"has", "via"} & NAME_STOP
    assert TITLE_STOP - STOP == {"the"}
    assert content_words("Pipettes for a Lab, with its Caps") == ["pipette", "lab", "cap"]
