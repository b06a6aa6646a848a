from __future__ import annotations

import pytest

from serve_app.contracts import TextStage
from serve_app.engines.itn import WetextItn


@pytest.mark.parametrize(
    ("lang", "spoken", "written"),
    [
        ("zh", "二零二五年三月十二号", "2025/03/12"),
        ("zh", "一百二十三块五毛钱", "123块5毛钱"),
        ("zh", "百分之五十", "50%"),
        ("en", "twenty three dollars and fifty cents", "$23.50"),
        ("en", "it costs twenty three dollars and fifty cents.", "it costs $23.50."),
        ("en", "Ever tried. Ever failed.", "Ever tried. Ever failed."),
    ],
)
def test_itn(lang: str, spoken: str, written: str) -> None:
    itn = WetextItn(lang)  # type: ignore[arg-type]
    assert isinstance(itn, TextStage)
    assert itn.process([spoken]) == [written]


def test_itn_keeps_empty_text() -> None:
    assert WetextItn("en").process(["", "  "]) == ["", "  "]
