"""The canonical label registry and each dataset's map onto it.

Every reader maps its own codes to the canonical names below (the FER+ order), so that a
model trained on one dataset can be evaluated on another and every probability array has
its columns in a model's ``labels`` order. A 7-class model uses the first seven names.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from ferkit.errors import UnknownLabelError

#: Canonical expression names, in the FER+ order (binding, see docs/design.md).
CANONICAL: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
BASIC7: tuple[str, ...] = CANONICAL[:7]


@dataclass(frozen=True)
class LabelMap:
    """A dataset's own codes mapped to label names, both ways.

    ``codes`` maps a dataset code (int or str) to a name; ``special`` names codes that are not
    expressions (AffectNet's "none", FER+'s "NF") and that readers drop and count.
    """

    name: str
    codes: Mapping[Hashable, str]
    special: frozenset[Hashable] = field(default_factory=frozenset)

    @property
    def names(self) -> tuple[str, ...]:
        """Expression names in code order, special codes left out."""
        return tuple(v for k, v in self.codes.items() if k not in self.special)

    def to_name(self, code: Hashable) -> str:
        try:
            return self.codes[code]
        except KeyError:
            known = ", ".join(map(str, self.codes))
            raise UnknownLabelError(f"unknown {self.name} label code {code!r} (known: {known})") from None

    def to_code(self, name: str) -> Hashable:
        wanted = name if name in self._inverse else canonical(name)
        try:
            return self._inverse[wanted]
        except KeyError:
            raise UnknownLabelError(f"label {name!r} has no {self.name} code") from None

    @property
    def _inverse(self) -> dict[str, Hashable]:
        return {v: k for k, v in self.codes.items()}


FER2013 = LabelMap(
    "fer2013",
    {0: "anger", 1: "disgust", 2: "fear", 3: "happiness", 4: "sadness", 5: "surprise", 6: "neutral"},
)

#: FER+ vote columns (fer2013new.csv), in file order; the last two are not expressions.
FERPLUS_COLUMNS: tuple[str, ...] = CANONICAL + ("unknown", "NF")
FERPLUS = LabelMap(
    "ferplus",
    {c: c for c in FERPLUS_COLUMNS},
    special=frozenset({"unknown", "NF"}),
)

RAFDB_BASIC = LabelMap(
    "rafdb",
    {1: "surprise", 2: "fear", 3: "disgust", 4: "happiness", 5: "sadness", 6: "anger", 7: "neutral"},
)

#: RAF-DB compound classes (1-based, as in its list_patition_label.txt) and their two parents.
RAFDB_COMPOUND_PARENTS: dict[str, tuple[str, str]] = {
    "happily_surprised": ("happiness", "surprise"),
    "happily_disgusted": ("happiness", "disgust"),
    "sadly_fearful": ("sadness", "fear"),
    "sadly_angry": ("sadness", "anger"),
    "sadly_surprised": ("sadness", "surprise"),
    "sadly_disgusted": ("sadness", "disgust"),
    "fearfully_angry": ("fear", "anger"),
    "fearfully_surprised": ("fear", "surprise"),
    "angrily_surprised": ("anger", "surprise"),
    "angrily_disgusted": ("anger", "disgust"),
    "disgustedly_surprised": ("disgust", "surprise"),
}
RAFDB_COMPOUND = LabelMap("rafdb-compound", {i + 1: n for i, n in enumerate(RAFDB_COMPOUND_PARENTS)})

AFFECTNET = LabelMap(
    "affectnet",
    {
        0: "neutral",
        1: "happiness",
        2: "sadness",
        3: "surprise",
        4: "fear",
        5: "disgust",
        6: "anger",
        7: "contempt",
        8: "none",
        9: "uncertain",
        10: "no_face",
    },
    special=frozenset({8, 9, 10}),
)

JAFFE = LabelMap(
    "jaffe",
    {"NE": "neutral", "HA": "happiness", "SU": "surprise", "SA": "sadness", "AN": "anger", "DI": "disgust",
     "FE": "fear"},
)

LABEL_MAPS: dict[str, LabelMap] = {
    m.name: m for m in (FER2013, FERPLUS, RAFDB_BASIC, RAFDB_COMPOUND, AFFECTNET, JAFFE)
}

#: Words people use for folder names and labels, lower-case, mapped to canonical names.
SYNONYMS: dict[str, str] = {
    **{c: c for c in CANONICAL},
    "neutrality": "neutral", "calm": "neutral", "ne": "neutral",
    "happy": "happiness", "joy": "happiness", "joyful": "happiness", "smile": "happiness",
    "smiling": "happiness", "ha": "happiness",
    "surprised": "surprise", "surprize": "surprise", "suprise": "surprise", "shock": "surprise",
    "su": "surprise",
    "sad": "sadness", "sorrow": "sadness", "unhappy": "sadness", "sa": "sadness",
    "angry": "anger", "mad": "anger", "rage": "anger", "an": "anger",
    "disgusted": "disgust", "disgusting": "disgust", "di": "disgust",
    "fearful": "fear", "scared": "fear", "afraid": "fear", "fright": "fear", "fe": "fear",
    "contemptuous": "contempt", "disdain": "contempt", "co": "contempt",
}


def canonical(name: str) -> str:
    """Canonical name for a label word (case, spaces, hyphens and synonyms forgiven).

    Raises :class:`UnknownLabelError` naming the word when nothing matches.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key in SYNONYMS:
        return SYNONYMS[key]
    if key.replace("_", "") in SYNONYMS:
        return SYNONYMS[key.replace("_", "")]
    known = ", ".join(CANONICAL)
    raise UnknownLabelError(f"unknown label name {name!r} (known: {known}, or a synonym such as happy, angry)")


def label_set(num_classes: int) -> tuple[str, ...]:
    """The first ``num_classes`` canonical names (7 = basic expressions, 8 = with contempt)."""
    if not 1 <= num_classes <= len(CANONICAL):
        raise UnknownLabelError(f"no canonical label set has {num_classes} classes (1-{len(CANONICAL)})")
    return CANONICAL[:num_classes]


def match_labels(source: Iterable[str], target: Iterable[str]) -> list[int]:
    """For each name in ``source``, its column in ``target`` (-1 where ``target`` lacks it).

    Used to score a model on a dataset with another label set (cross-dataset evaluation).
    """
    tgt = {canonical(t): i for i, t in enumerate(target)}
    return [tgt.get(canonical(s), -1) for s in source]
