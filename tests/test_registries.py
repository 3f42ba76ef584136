"""Every registry refuses a second, different object under a taken name, the same way."""

from __future__ import annotations

import pytest

from ferkit.errors import ConfigError


def _registries():
    from ferkit.data.registry import DATASETS, register_dataset
    from ferkit.inference.detect import DETECTORS, register_detector
    from ferkit.label_graphs import LABEL_GRAPHS, register_label_graph
    from ferkit.methods import METHODS, get_method, register_method
    from ferkit.models.registry import MODELS, register_model

    get_method("ce")  # loads the built-in methods

    class Ce(METHODS["ce"]):
        name = "ce"

    from ferkit.label_graphs import LabelGraph

    graph = next(iter(LABEL_GRAPHS.values()))
    other_graph = LabelGraph(name=graph.name, fine=("a", "b"))
    return [
        ("method", lambda: register_method(Ce)),
        ("backbone", lambda: register_model("compact")(lambda **kw: None)),
        ("dataset reader", lambda: register_dataset("fer2013")(lambda **kw: None)),
        ("detector", lambda: register_detector("haar")(type("OtherHaar", (DETECTORS["haar"],), {}))),
        ("label graph", lambda: register_label_graph(other_graph)),
    ], (METHODS, MODELS, DATASETS, DETECTORS, LABEL_GRAPHS)


def test_every_registry_refuses_a_duplicate_name():
    cases, tables = _registries()
    before = [dict(t) for t in tables]
    for what, register in cases:
        with pytest.raises(ConfigError, match=f"{what} '.*' is already registered"):
            register()
    assert [dict(t) for t in tables] == before  # nothing was replaced


def test_named_models_and_aliases_refuse_duplicates_and_are_listed(capsys):
    from ferkit import zoo
    from ferkit.cli import main

    name = next(iter(zoo.MODELS))
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register_model(name, "other.pt")
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register_model("brand-new", "x.pt", aliases=(name,))
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register_model("default", "x.pt")
    assert "brand-new" not in zoo.MODELS
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "fast" in out  # the aliases the README uses are shown
