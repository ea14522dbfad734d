"""models/MODEL_CARD.md: each model's generated section between its own markers; the hand-written
text around the sections is kept. The classifier's evaluation and the YuNet build write theirs."""

from __future__ import annotations

from pathlib import Path


def update_card(card: Path, section: str, start: str, end: str) -> None:
    """Replace the text between a section's markers ``start`` and ``end``, or append the
    section; leaves the rest of the card alone."""
    text = card.read_text() if card.is_file() else "# Model card\n\n"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = pre + section.rstrip("\n") + post
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text)


__all__ = ["update_card"]
