"""Label names of annotation files -> the agent's labels: built-in synonyms and ``--label-map``.

Annotation tools and public sets spell the three classes many ways (``with_mask``,
``mask_weared_incorrect``, ``No-Mask``...). :class:`LabelMap` turns each into ``mask``,
``incorrect_mask`` or ``no_mask`` (or :data:`IGNORE`: the box is dropped), so files are read as
they were exported; a label it does not know fails, naming the file, the label and the option.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Optional

from agent.tools.annotations.common import AnnotationError

LABELS = ("mask", "incorrect_mask", "no_mask")
IGNORE = "ignore"  # a mapped label whose boxes are skipped (e.g. whole heads)

# Spellings seen in public face-mask sets and labelImg / CVAT / Roboflow exports, normalised by
# :func:`normalise` (lower case; spaces and dashes as underscores).
SYNONYMS: Dict[str, str] = {
    **dict.fromkeys(("mask", "with_mask", "masked", "face_mask", "facemask", "wearing_mask", "mask_on",
                     "mask_worn_correctly", "mask_weared_correctly", "correct_mask"), "mask"),
    **dict.fromkeys(("no_mask", "nomask", "without_mask", "not_masked", "unmasked", "no_face_mask",
                     "without_face_mask", "no_facemask", "mask_off", "bare_face"), "no_mask"),
    **dict.fromkeys(("incorrect_mask", "mask_weared_incorrect", "mask_worn_incorrectly", "mask_worn_incorrect",
                     "mask_incorrect", "incorrectly_worn_mask", "improper_mask", "improperly_worn_mask",
                     "mask_incorrectly_worn"), "incorrect_mask"),
}


class LabelError(AnnotationError):
    """A ``--label-map`` that cannot be read, or an annotated label it does not cover."""


def normalise(label: str) -> str:
    """How labels are compared: case, surrounding spaces, and space/dash vs underscore do not matter."""
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


class LabelMap:
    """Annotated label -> ``mask`` / ``incorrect_mask`` / ``no_mask`` / :data:`IGNORE`.

    The user's entries (``--label-map``) come first, then :data:`SYNONYMS`.
    """

    def __init__(self, entries: Optional[Dict[str, str]] = None) -> None:
        self.entries = {normalise(k): v for k, v in (entries or {}).items()}

    @classmethod
    def parse(cls, specs: Iterable[str]) -> "LabelMap":
        """From ``--label-map`` values: ``FROM=TO`` pairs, comma separated (the option may repeat).

        ``TO`` is one of :data:`LABELS` or ``ignore``; ``ignore=FROM`` is read as ``FROM=ignore``.
        """
        entries: Dict[str, str] = {}
        for spec in specs:
            for item in filter(None, (s.strip() for s in spec.split(","))):
                src, sep, dst = (s.strip() for s in item.partition("="))
                if not sep or not src or not dst:
                    raise LabelError(f"--label-map: {item!r} is not FROM=TO (e.g. with_mask=mask or ignore=head)")
                if src == IGNORE:
                    src, dst = dst, IGNORE
                if dst not in LABELS + (IGNORE,):
                    raise LabelError(f"--label-map: {item!r} maps to {dst!r}; map to one of"
                                     f" {', '.join(LABELS)} or write ignore={src}")
                entries[src] = dst
        return cls(entries)

    def __call__(self, label: str, where: str) -> str:
        """The agent's label for ``label`` (or :data:`IGNORE`); :class:`LabelError` naming ``where`` if unknown."""
        key = normalise(label)
        found = self.entries.get(key) or SYNONYMS.get(key)
        if found is None:
            raise LabelError(f"{where}: unknown label {label!r} (known: {', '.join(LABELS)} and their common"
                             f" spellings); fix: --label-map {label}=mask|incorrect_mask|no_mask, or"
                             f" --label-map ignore={label} to skip those boxes")
        return found


__all__ = ["IGNORE", "LABELS", "LabelError", "LabelMap", "SYNONYMS", "normalise"]
