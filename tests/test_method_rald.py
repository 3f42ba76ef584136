"""RALD: label graphs and their vectors, the attention blocks, NNLDL, batch independence in
memory mode, and training end to end on a generated coarse/fine dataset."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench_scripts import load_benchmark
from ferkit.data.registry import load_dataset
from ferkit.engine.config import load_config
from ferkit.engine.model_io import load_model
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError, UnknownLabelError
from ferkit.label_graphs import (
    FERPLUS_VALENCE,
    FG_EMOTIONS,
    LABEL_GRAPHS,
    LabelGraph,
    all_node_names,
    embedding_table,
    flat_graph,
    node_embeddings,
)
from ferkit.methods import get_method
from ferkit.models import build_model
from ferkit.models.rald import AttentionBlock, neighbour_distribution

from synthetic import HIERARCHY, write_config, write_hierarchy_folder

FINE = [f for kids in HIERARCHY.values() for f in kids]


def _rald(classes=FINE, **cfg):
    torch.manual_seed(0)
    model = build_model("compact", num_classes=len(classes), in_channels=1, image_size=48)
    return get_method("rald")(model, {"name": "rald", **cfg}, len(classes), {"classes": list(classes)})


# ---- label graphs -----------------------------------------------------------------------
def test_registered_graphs_have_the_papers_shapes():
    fg = LABEL_GRAPHS["fg-emotions"]
    assert (len(fg.coarse), len(fg.fine)) == (6, 33)
    rc = LABEL_GRAPHS["rafdb-compound"]
    assert len(rc.fine) == 11 and all(len(rc.parents[f]) == 2 for f in rc.fine)
    assert set(rc.coarse) == {"happiness", "surprise", "disgust", "sadness", "fear", "anger"}
    fv = LABEL_GRAPHS["ferplus-valence"]
    assert set(fv.fine) == {"neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"}
    assert fv.parents["surprise"] == ("positive", "negative")


def test_structure_index_is_shortest_path_zero_diagonal_and_sigma_when_unconnected():
    g = LabelGraph("t", ("a", "b", "c"), ("X", "Y"), {"a": ("X",), "b": ("X",), "c": ("Y",)})
    xi = g.structure_index(unconnected=500)
    # nodes: a b c X Y
    assert xi.tolist() == [[0, 2, 500, 1, 500],
                           [2, 0, 500, 1, 500],
                           [500, 500, 0, 500, 1],
                           [1, 1, 500, 0, 500],
                           [500, 500, 1, 500, 0]]
    flat = flat_graph(["a", "b"]).structure_index(7)
    assert flat.tolist() == [[0, 7], [7, 0]]


def test_for_classes_reorders_drops_and_names_unknown_classes():
    g = FERPLUS_VALENCE.for_classes(["anger", "happiness", "neutral"])
    assert g.fine == ("anger", "happiness", "neutral")
    assert g.coarse == ("positive", "negative", "neutral")
    g2 = FERPLUS_VALENCE.for_classes(["happy", "sad"])  # canonical synonyms
    assert g2.fine == ("happiness", "sadness") and g2.coarse == ("positive", "negative")
    with pytest.raises(UnknownLabelError, match="not a fine label"):
        FG_EMOTIONS.for_classes(["anxiety", "boredom"])


def test_shipped_vectors_cover_every_node_and_coarse_duplicates_take_the_mean_of_children():
    index, vectors = embedding_table()
    assert vectors.shape[1] == 384 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    for name in all_node_names():
        assert name.replace("_", " ") in index
    e = node_embeddings(FG_EMOTIONS)
    nodes = FG_EMOTIONS.nodes
    anger_coarse = nodes.index("anger", len(FG_EMOTIONS.fine))
    kids = [FG_EMOTIONS.fine.index(k) for k in FG_EMOTIONS.children("anger")]
    np.testing.assert_allclose(e[anger_coarse], e[kids].mean(0), atol=1e-6)
    fear_coarse = nodes.index("fear")  # not repeated among the fine labels: its own vector
    np.testing.assert_allclose(e[fear_coarse], vectors[index["fear"]], atol=1e-6)
    # related words are closer than unrelated ones in the frozen text space
    v = {n: vectors[index[n]] for n in ("anger", "wrath", "cheerful")}
    assert v["anger"] @ v["wrath"] > v["anger"] @ v["cheerful"]


def test_unknown_label_vector_is_a_clear_error(tmp_path):
    g = LabelGraph("t", ("zorblax",))
    with pytest.raises(UnknownLabelError, match="scripts/embed_labels.py"):
        node_embeddings(g)
    path = tmp_path / "mine.npz"
    np.savez(path, names=np.array(["zorblax"]), vectors=np.ones((1, 4), np.float32))
    assert node_embeddings(g, str(path)).shape == (1, 4)


def test_folder_reader_reads_fine_label_folders(tmp_path):
    root = write_hierarchy_folder(tmp_path / "h", n_train=60, n_test=12)
    ds = load_dataset("folder", str(root), "train", grayscale=True, label_graph="fg-emotions", cache=False)
    assert set(ds.classes) <= set(FINE) and len(ds) == 60
    assert list(ds.classes) == [f for f in FG_EMOTIONS.fine if f in ds.classes]  # the graph's order
    with pytest.raises(UnknownLabelError, match="fine label of label graph"):
        load_dataset("folder", str(root), "train", grayscale=True, label_graph="ferplus-valence", cache=False)


# ---- the blocks and the losses ----------------------------------------------------------
def test_hierarchy_bias_is_one_learnable_scalar_per_structure_value():
    m = _rald(graph="fg-emotions")
    assert m.graph.fine == tuple(FINE) and m.graph.coarse == ("fear", "happiness")
    assert m.structure_values == [0, 1, 2, 500]
    assert m.hlrr_block.bias.shape == (4,)
    assert m.labels_text.shape == (8, 384) and not m.labels_text.requires_grad
    # the bias changes the label attention: raising b for "unconnected" changes S~
    with torch.no_grad():
        before = m.label_features().clone()
        m.hlrr_block.bias[3] = 5.0
        assert not torch.allclose(before, m.label_features())
    # RALD-L (flat): no bias parameters
    assert _rald(graph=None).hlrr_block.bias is None


def test_switches_build_only_their_blocks():
    m = _rald(itrr=False, hlrr=False, lgifo=False, nnldl=False)
    assert m.itrr_block is None and m.hlrr_block is None and m.lgifo_block is None
    assert m.classifier.in_features == m.model.feature_dim
    m = _rald(graph="fg-emotions", itrr=False, hlrr=False)
    assert m.lgifo_block is not None and m.hlrr_block is None and m.classifier.in_features == 384


def test_neighbour_distribution_matches_eq_18():
    relation = torch.tensor([[9.0, 0.5, 0.3, 0.2],
                             [0.1, 9.0, 0.6, 0.3],
                             [0.4, 0.4, 9.0, 0.2],
                             [0.7, 0.1, 0.2, 9.0]])
    probs = torch.eye(4)[:, :3].clone()
    probs[3] = torch.tensor([0.2, 0.3, 0.5])
    d = neighbour_distribution(relation, probs, k=2)
    # row 0: neighbours 1 (0.5) and 2 (0.3), never itself
    torch.testing.assert_close(d[0], (0.5 * probs[1] + 0.3 * probs[2]) / 0.8)
    torch.testing.assert_close(d[3], (0.7 * probs[0] + 0.2 * probs[2]) / 0.9)
    torch.testing.assert_close(d.sum(1), torch.ones(4))
    # k larger than the batch: every other row
    torch.testing.assert_close(neighbour_distribution(relation, probs, k=10)[0],
                               (0.5 * probs[1] + 0.3 * probs[2] + 0.2 * probs[3]) / 1.0)


def test_kl_term_is_eq_19_and_carries_no_gradient_to_the_target():
    m = _rald()
    logits = torch.randn(6, 6, requires_grad=True)
    relation = torch.rand(6, 6)
    kl = m.kl_term(logits, relation)
    target = neighbour_distribution(relation, logits.detach().softmax(1), m.k)
    expected = -(target * F.log_softmax(logits, 1)).sum() / (6 * 6)
    torch.testing.assert_close(kl, expected)
    kl.backward()
    assert logits.grad.abs().sum() > 0


def test_memory_mode_prediction_does_not_depend_on_the_batch_and_batch_mode_does(one_thread):
    m = _rald(graph="fg-emotions", memory_size=16).eval()
    m.set_memory(torch.randn(16, 1, 48, 48))
    assert int(m.memory_rows) == 16
    x = torch.randn(5, 1, 48, 48)
    others = torch.randn(7, 1, 48, 48)
    with torch.no_grad():
        alone = m.predict_logits(x[:1])
        in_batch = m.predict_logits(torch.cat([x[:1], others]))[:1]
        in_other = m.predict_logits(torch.cat([others[:3], x[:1], x[1:]]))[3:4]
        torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(alone, in_other, atol=1e-5, rtol=1e-4)
        m.inference = "batch"
        b1 = m.predict_logits(torch.cat([x[:1], others]))[:1]
        b2 = m.predict_logits(torch.cat([x[:1], -others]))[:1]
    assert not torch.allclose(b1, b2, atol=1e-4)


def test_memory_attention_equals_batch_attention_over_self_plus_memory():
    """forward_memory is the ordinary block applied to [query] + memory, row by row."""
    torch.manual_seed(0)
    blk = AttentionBlock(16, 16, 4).eval()
    q, mem = torch.randn(3, 16), torch.randn(5, 16)
    with torch.no_grad():
        got = blk.forward_memory(q, mem)
        for i in range(3):
            tokens = torch.cat([q[i:i + 1], mem])
            ref = blk(tokens, tokens)[0][0]
            torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=1e-4)


def test_cam_is_refused_with_a_reason():
    with pytest.raises(ConfigError, match="not defined for RALD"):
        _rald().cam_weights()


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="inference"):
        _rald(inference="sometimes")
    with pytest.raises(ConfigError, match="heads"):
        _rald(heads=7)
    with pytest.raises(ConfigError, match="unknown label graph"):
        _rald(graph="no-such-graph")
    with pytest.raises(ConfigError, match="hlrr needs method.lgifo"):  # was silently ignored
        _rald(hlrr=True, lgifo=False)


# ---- end to end --------------------------------------------------------------------------
def _hier_config(tmp_path, **method):
    root = write_hierarchy_folder(tmp_path / "h", n_train=320, n_test=96)
    data = {"dataset": "folder", "train_split": "train", "val_split": "test",
            "options": {"cache": False, "grayscale": True, "label_graph": "fg-emotions"}}
    return write_config(tmp_path / "rald.yaml", root, tmp_path / "runs", data=data,
                        method={"name": "rald", "graph": "fg-emotions", "k": 3, "memory_size": 31, **method},
                        train={"epochs": 8, "ema": 0.0, "log_every": 1000})


def test_rald_learns_the_hierarchy_set_and_reloads_with_its_memory(tmp_path, one_thread):
    tr = Trainer(load_config(_hier_config(tmp_path)))
    row = tr.fit()
    assert row["val_accuracy"] >= 0.9, row  # 6 classes, chance 0.17
    assert "train_kl" in row and row["train_kl"] > 0
    assert int(tr.method.memory_rows) == 31
    loaded = load_model(tr.run_dir)
    net = loaded.net
    assert net.graph.coarse == ("fear", "happiness") and int(net.memory_rows) == 31
    assert net.memory.abs().sum() > 0  # the saved bank (of the selected epoch), not zeros
    ds = load_dataset("folder", str(tmp_path / "h"), "test", grayscale=True, label_graph="fg-emotions", cache=False)
    batch = loaded.predict_probs(ds.images[:40], batch_size=40)
    singles = np.concatenate([loaded.predict_probs(ds.images[i:i + 1]) for i in range(40)])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert (batch.argmax(1) == ds.labels[:40]).mean() >= 0.9
    # the memory-mode graph exports to ONNX and stays batch-independent there
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx

    onnx = OnnxModel(export_onnx(loaded, tmp_path / "rald.onnx"))
    np.testing.assert_allclose(onnx.predict_probs(ds.images[:40]), batch, atol=1e-4)
    np.testing.assert_allclose(onnx.predict_probs(ds.images[:1]), batch[:1], atol=1e-4)
    # the inference benchmark scores the run both ways and checks batch independence
    res = load_benchmark("rald_inference").score_run(tr.run_dir, "cpu", check=20)
    assert set(res["accuracy"]) == {"memory", "batch128_ordered", "batch128_shuffled", "batch32_ordered",
                                    "batch32_shuffled"}
    assert res["accuracy"]["memory"] >= 0.9 and res["n"] == 96
    assert res["memory_single_vs_batched_max_abs_diff"] < 1e-4
    assert res["memory_single_vs_batched_class_changes"] == 0.0


def test_speed_benchmark_times_baseline_and_rald(one_thread):
    s = load_benchmark("rald_inference").speed("compact", torch.device("cpu"), batch=8, max_seconds=0.01)
    for key in ("baseline_infer_img_s", "rald_memory_infer_img_s", "rald_batch_infer_img_s",
                "baseline_train_img_s", "rald_train_img_s"):
        assert s[key] > 0
    assert s["rald_memory_infer_cost_x"] == pytest.approx(s["baseline_infer_img_s"] / s["rald_memory_infer_img_s"])


def test_skip_speed_keeps_the_earlier_timings_with_their_commit(tmp_path):
    import json

    bench = load_benchmark("rald_inference")
    assert bench.previous_speeds(tmp_path / "metrics.json") == []
    timing = {"backbone": "compact", "baseline_infer_img_s": 100.0}
    (tmp_path / "metrics.json").write_text(json.dumps({"speed": [timing], "environment": {"git_commit": "abc1234"}}))
    kept = bench.previous_speeds(tmp_path / "metrics.json")
    assert kept == [{**timing, "measured_at_commit": "abc1234"}]
    (tmp_path / "metrics.json").write_text(json.dumps({"speed": kept, "environment": {"git_commit": "fff0000"}}))
    assert bench.previous_speeds(tmp_path / "metrics.json")[0]["measured_at_commit"] == "abc1234"


def test_literal_blocks_without_residual_are_an_option(tmp_path, one_thread):
    """residual: false is the paper's eqs. (7)/(17) as written; it builds and trains without error."""
    cfg = load_config(_hier_config(tmp_path, residual=False))
    cfg["train"]["epochs"] = 1
    row = Trainer(cfg).fit()
    assert np.isfinite(row["train_loss"])


def test_k_sweep_plot_reads_the_grid_table(tmp_path):
    import json

    def group(variant, acc, dataset="ferplus"):
        return {"variant": variant, "dataset": dataset, "accuracy": {"mean": acc}}

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"groups": [group("baseline", 0.70), group("rald", 0.72), group("rald_k1", 0.71),
                                            group("rald_k9", 0.715), group("itrr", 0.69),
                                            group("rald", 0.5, "fer2013")]}))
    ks = load_benchmark("rald_inference").k_sweep(table, tmp_path)
    assert ks["accuracy_by_k"] == {"1": 0.71, "5": 0.72, "9": 0.715} and ks["baseline"] == 0.70
    assert (tmp_path / "k_sweep.png").stat().st_size > 0
    table.write_text(json.dumps({"groups": [group("rald", 0.72)]}))
    assert load_benchmark("rald_inference").k_sweep(table, tmp_path) is None  # one k is not a sweep
