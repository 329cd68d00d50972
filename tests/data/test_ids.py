"""Item ids never become file names unchecked."""

from __future__ import annotations

import pytest

from raygrid.data.ids import check_file_stem, is_plain_file_stem, safe_file_stem
from raygrid.errors import DataError

HOSTILE = ["../x", "a/b", "a\\b", "..", ".", ".hidden", "/etc/passwd", "x/../../y", "", "a\x00b", "..\\..\\win"]


@pytest.mark.parametrize("item_id", HOSTILE)
def test_hostile_ids_are_not_plain_stems(item_id: str) -> None:
    assert not is_plain_file_stem(item_id)
    with pytest.raises(DataError, match="cannot name an image file") as info:
        check_file_stem(item_id, "reviews.json line 3")
    assert "reviews.json line 3" in str(info.value)


@pytest.mark.parametrize("item_id", HOSTILE)
def test_safe_stems_stay_in_their_folder(item_id: str) -> None:
    stem = safe_file_stem(item_id)
    assert is_plain_file_stem(stem)
    assert "/" not in stem and "\\" not in stem and ".." not in stem


def test_plain_ids_are_kept_and_sanitised_ids_do_not_collide() -> None:
    assert safe_file_stem("B00012345") == "B00012345"
    assert safe_file_stem("57") == "57"
    assert safe_file_stem("a/b") != safe_file_stem("a_b")
    assert safe_file_stem("a/b") != safe_file_stem("a\\b")
