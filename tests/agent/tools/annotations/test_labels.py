"""agent.tools.annotations.labels: built-in synonyms, --label-map parsing, and the unknown-label message."""

from __future__ import annotations

import pytest

from agent.tools.annotations.labels import IGNORE, LabelError, LabelMap


@pytest.mark.parametrize("spelled, label", [
    ("with_mask", "mask"), ("Masked", "mask"), ("without_mask", "no_mask"), ("No-Mask", "no_mask"),
    ("nomask", "no_mask"), ("NOT_MASKED", "no_mask"), ("mask_weared_incorrect", "incorrect_mask"),
    ("Mask worn incorrectly", "incorrect_mask"), (" mask ", "mask"),
])
def test_common_spellings_need_no_map(spelled, label):
    assert LabelMap()(spelled, "f.xml") == label


def test_map_comes_before_synonyms_and_ignore_works_both_ways():
    m = LabelMap.parse(["helmet-mask=mask, Head=ignore", "ignore=hand,with_mask=incorrect_mask"])
    assert [m(x, "f") for x in ("Helmet_Mask", "head", "HAND", "with_mask", "without_mask")] == \
        ["mask", IGNORE, IGNORE, "incorrect_mask", "no_mask"]


def test_unknown_label_names_file_label_and_option():
    with pytest.raises(LabelError) as err:
        LabelMap()("beard", "a/b.xml: object 2")
    msg = str(err.value)
    assert msg.startswith("a/b.xml: object 2: unknown label 'beard'")
    assert "--label-map beard=mask|incorrect_mask|no_mask" in msg and "--label-map ignore=beard" in msg


@pytest.mark.parametrize("spec, part", [("with_mask", "is not FROM=TO"), ("=mask", "is not FROM=TO"),
                                        ("with_mask=masked", "maps to 'masked'")])
def test_bad_map_names_the_option(spec, part):
    with pytest.raises(LabelError, match=f"--label-map: .*{part}"):
        LabelMap.parse([spec])
