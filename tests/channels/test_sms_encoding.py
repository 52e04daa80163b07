"""GSM-7 / UCS-2 detection and segment counting (3GPP TS 23.038 and 23.040), as a table."""

from __future__ import annotations

import pytest

from channels.sms.encoding import GSM7_BASIC, GSM7_EXTENSION, SmsEncoding, analyse, is_gsm7, split

EMOJI = "\U0001f600"  # 😀: outside the Basic Multilingual Plane, a surrogate pair in UTF-16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", SmsEncoding("GSM-7", 0, 1), id="empty is one segment of 0 units"),
        pytest.param("a" * 160, SmsEncoding("GSM-7", 160, 1), id="160 plain"),
        pytest.param("a" * 161, SmsEncoding("GSM-7", 161, 2), id="161 plain"),
        pytest.param("a" * 306, SmsEncoding("GSM-7", 306, 2), id="306 plain"),
        pytest.param("a" * 307, SmsEncoding("GSM-7", 307, 3), id="307 plain"),
        pytest.param("æøåÆØÅ" * 26 + "éÉ" * 2, SmsEncoding("GSM-7", 160, 1), id="æøå stay GSM-7, 160"),
        pytest.param("Blåbærsyltetøy på Ærøy" * 7 + "x", SmsEncoding("GSM-7", 155, 1), id="Norwegian text"),
        pytest.param("€", SmsEncoding("GSM-7", 2, 1), id="euro counts 2"),
        pytest.param("^{}\\[~]|€\f", SmsEncoding("GSM-7", 20, 1), id="every extension char counts 2"),
        pytest.param("a" * 158 + "€", SmsEncoding("GSM-7", 160, 1), id="extension char fills 160 exactly"),
        pytest.param("a" * 159 + "€", SmsEncoding("GSM-7", 161, 2), id="extension char tips over 160"),
        # 152 + 2 would be 154 > 153: the escape pair is not split, it opens segment 2 (152 | 2 + 9).
        pytest.param("a" * 152 + "€" + "a" * 9, SmsEncoding("GSM-7", 163, 2), id="escape pair not split"),
        # 152 | 2 + 151 = 153 | 1: the unsplit pair pushes the last septet into a third segment.
        pytest.param("a" * 152 + "€" + "a" * 152, SmsEncoding("GSM-7", 306, 3), id="pair shifts into third"),
        pytest.param("a" * 151 + "€" + "a" * 153, SmsEncoding("GSM-7", 306, 2), id="pair fits at 152-153"),
        pytest.param("€" * 80, SmsEncoding("GSM-7", 160, 1), id="80 euros fill one segment"),
        pytest.param("€" * 81, SmsEncoding("GSM-7", 162, 2), id="81 euros take two"),
        pytest.param("ő", SmsEncoding("UCS-2", 1, 1), id="Hungarian ő forces UCS-2"),
        pytest.param("Привет", SmsEncoding("UCS-2", 6, 1), id="Cyrillic"),
        pytest.param("ç", SmsEncoding("UCS-2", 1, 1), id="small ç is not in the basic set"),
        pytest.param("x" * 69 + "ő", SmsEncoding("UCS-2", 70, 1), id="UCS-2 70 in one"),
        pytest.param("x" * 70 + "ő", SmsEncoding("UCS-2", 71, 2), id="UCS-2 71 in two"),
        pytest.param("x" * 133 + "ő", SmsEncoding("UCS-2", 134, 2), id="UCS-2 134 in two"),
        pytest.param("x" * 134 + "ő", SmsEncoding("UCS-2", 135, 3), id="UCS-2 135 in three"),
        pytest.param("Hei " + EMOJI, SmsEncoding("UCS-2", 6, 1), id="emoji counts 2"),
        pytest.param(EMOJI * 35, SmsEncoding("UCS-2", 70, 1), id="35 emoji fill one segment"),
        pytest.param(EMOJI * 36, SmsEncoding("UCS-2", 72, 2), id="36 emoji take two"),
        # 66 units + a pair would be 68 > 67: the surrogate pair opens segment 2 (66 | 2 + 2).
        pytest.param("x" * 66 + EMOJI * 2, SmsEncoding("UCS-2", 70, 1), id="pair at the boundary, single"),
        pytest.param("x" * 66 + EMOJI * 3, SmsEncoding("UCS-2", 72, 2), id="surrogate pair not split"),
        pytest.param("x" * 66 + EMOJI + "x" * 66, SmsEncoding("UCS-2", 134, 3), id="pair shifts into third"),
        pytest.param("€ og ő", SmsEncoding("UCS-2", 6, 1), id="euro in UCS-2 counts 1"),
    ],
)
def test_analyse(text: str, expected: SmsEncoding) -> None:
    assert analyse(text) == expected


@pytest.mark.parametrize(
    ("text", "gsm7"),
    [
        ("", True),
        ("Hei Kåre Ærø! Betal 1 234,50 kr innen 15.03. Spørsmål? Ring oss.", True),
        ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà", True),
        ("Linje 1\nLinje 2\r\n", True),
        ("{[~]}^|\\€", True),
        ("ő", False),
        ("Привет", False),
        ("tab\there", False),
        ("’curly quotes’", False),
        ("Hei " + EMOJI, False),
    ],
)
def test_is_gsm7(text: str, gsm7: bool) -> None:
    assert is_gsm7(text) is gsm7
    assert (analyse(text).encoding == "GSM-7") is gsm7


def test_alphabet_tables() -> None:
    # 128 code points in the basic set, one of which (0x1B) is the escape to the extension table.
    assert len(GSM7_BASIC) == 127
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert set("æøåÆØÅ") <= GSM7_BASIC
    assert set("^{}\\[~]|€") <= GSM7_EXTENSION


@pytest.mark.parametrize(
    ("text", "encoding", "lengths"),
    [
        ("Hei Kari, betal innen fredag.", "GSM-7", [29]),
        ("æøå ÆØÅ " * 20, "GSM-7", [160]),
        ("a" * 161, "GSM-7", [153, 8]),
        # an escape pair (€ costs two septets) is never split: it starts the next segment whole
        ("a" * 152 + "€" + "b" * 10, "GSM-7", [152, 12]),
        ("Hei 👋 " * 12, "UCS-2", [67, 17]),
        # so is a surrogate pair (an emoji costs two UTF-16 units)
        ("a" * 66 + "👋" + "b" * 10, "UCS-2", [66, 12]),
        ("ф" * 70, "UCS-2", [70]),
    ],
)
def test_segments_are_split_as_the_carrier_bills_them(text: str, encoding: str, lengths: list[int]) -> None:
    found, segments = split(text)
    assert found == encoding == analyse(text).encoding
    assert [s.units for s in segments] == lengths
    assert len(segments) == analyse(text).segments
    assert "".join(s.text for s in segments) == text
