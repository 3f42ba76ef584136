"""The label registry: every dataset map round-trips and lands on canonical names."""

from __future__ import annotations

import pytest

from ferkit import labels as L
from ferkit.errors import UnknownLabelError


def test_canonical_order_is_ferplus_order():
    assert L.CANONICAL == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                           "contempt")
    assert L.label_set(7) == L.CANONICAL[:7] and L.label_set(8) == L.CANONICAL


@pytest.mark.parametrize("name", sorted(L.LABEL_MAPS))
def test_every_map_round_trips(name):
    m = L.LABEL_MAPS[name]
    for code, label in m.codes.items():
        assert m.to_name(code) == label
        assert m.to_code(label) == code
    assert len(set(m.codes.values())) == len(m.codes)  # one code per name


@pytest.mark.parametrize("name", ["fer2013", "ferplus", "rafdb", "affectnet", "jaffe"])
def test_basic_maps_land_on_canonical_names(name):
    m = L.LABEL_MAPS[name]
    assert set(m.names) <= set(L.CANONICAL)
    assert set(L.BASIC7) <= set(m.names)


def test_dataset_specific_codes():
    assert L.FER2013.to_name(0) == "anger" and L.FER2013.to_name(6) == "neutral"
    assert L.RAFDB_BASIC.to_name(1) == "surprise" and L.RAFDB_BASIC.to_name(7) == "neutral"
    assert L.AFFECTNET.to_name(7) == "contempt" and L.AFFECTNET.special == {8, 9, 10}
    assert "none" not in L.AFFECTNET.names
    assert L.JAFFE.to_name("HA") == "happiness"
    assert L.FERPLUS.names == L.CANONICAL and L.FERPLUS.special == {"unknown", "NF"}


def test_compound_classes_have_two_canonical_parents():
    assert len(L.RAFDB_COMPOUND.codes) == 11
    assert L.RAFDB_COMPOUND.to_name(1) == "happily_surprised"
    for name in L.RAFDB_COMPOUND.names:
        a, b = L.RAFDB_COMPOUND_PARENTS[name]
        assert a != b and {a, b} <= set(L.BASIC7)


@pytest.mark.parametrize("word, expected", [("Happy", "happiness"), ("angry", "anger"), ("SAD", "sadness"),
                                            ("surprised", "surprise"), ("Fearful", "fear"),
                                            ("disgusted", "disgust"), ("calm", "neutral"),
                                            ("contempt", "contempt"), (" happiness ", "happiness")])
def test_synonyms(word, expected):
    assert L.canonical(word) == expected


def test_every_synonym_maps_to_canonical():
    assert set(L.SYNONYMS.values()) == set(L.CANONICAL)


def test_unknown_label_is_one_clear_line():
    with pytest.raises(UnknownLabelError) as err:
        L.canonical("grumpy")
    assert "grumpy" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnknownLabelError, match="fer2013 label code 9"):
        L.FER2013.to_name(9)
    with pytest.raises(UnknownLabelError):
        L.label_set(9)


def test_to_code_accepts_synonyms():
    assert L.FER2013.to_code("happy") == 3
    assert L.RAFDB_BASIC.to_code("angry") == 6


def test_match_labels_for_cross_dataset():
    assert L.match_labels(L.BASIC7, L.CANONICAL) == list(range(7))
    assert L.match_labels(L.CANONICAL, L.BASIC7) == list(range(7)) + [-1]
