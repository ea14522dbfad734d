"""convert.evaluate.card: a model's section of the card replaced between its markers, the rest kept."""

from convert.evaluate import classifier as ev
from convert.evaluate.card import update_card


def test_update_card_replaces_only_its_section(tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model card\n\n## Face detector\ntext\n")
    update_card(card, f"{ev.START}\n## Mask classifier\nv1\n{ev.END}\n", ev.START, ev.END)
    update_card(card, f"{ev.START}\n## Mask classifier\nv2\n{ev.END}\n", ev.START, ev.END)
    text = card.read_text()
    assert "## Face detector\ntext" in text and "v2" in text and "v1" not in text
    assert text.count(ev.START) == 1
