"""Letter PDFs from the real templates: facts, the window layout (R7), page numbers, our reference, the
shipped fonts, the resource sandbox, and a render pool that leaves the event loop alone."""

from __future__ import annotations

import asyncio
import copy
import io
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]
from pypdf import PdfReader

from channels.base import PermanentChannelError
from channels.letter import (
    A4_MM,
    FONTS_DIR,
    WINDOW_MM,
    WINDOW_PLAY_MM,
    PdfRenderer,
    PrintLetterChannel,
    allowed_resource,
    close_default_renderer,
    letter_reference,
    render_pdf,
)
from channels.outbox import LETTER_LIMITS
from orchestrator.rendering import SAMPLE_CONTEXT, Renderer

KINDS = ("reminder", "inkassovarsel")
CONTACT_ID = "01JB8Z6Q4M2XK7T9RDW3HV5NCE"
ATTEMPT_ID = "01JB8Z7A1B2C3D4E5F6G7H8J9K"
REFERENCE = f"{CONTACT_ID}.{ATTEMPT_ID}"
RECIPIENT = ("Kåre Ærø Østby-Ødegård", ["Bjørnøya gate 12 B", "Postboks 123 Sentrum", "9990 BÅTSFJORD"])
PT_TO_MM = 25.4 / 72
HEARTBEAT_S = 0.05
MAX_HEARTBEAT_GAP_S = 0.25


def letter_context(kind: str, **overrides: Any) -> dict[str, Any]:
    context = copy.deepcopy(SAMPLE_CONTEXT)
    context["kind"] = kind
    context["recipient"] = {"name": RECIPIENT[0], "address_lines": list(RECIPIENT[1])}
    context.update(overrides)
    return context


def letter_html(kind: str, context: dict[str, Any] | None = None) -> str:
    rendered = Renderer().render(
        language="nb",
        kind=kind,
        variant="neutral",
        channel="letter",
        context=context if context is not None else letter_context(kind),
    )
    assert rendered.html is not None
    return rendered.html


@pytest.fixture(scope="module", autouse=True)
def _stop_the_shared_pool() -> Iterator[None]:
    yield
    asyncio.run(close_default_renderer())


@pytest.fixture(scope="module")
def pdfs() -> dict[str, bytes]:
    """One PDF per kind, from the real templates, through ``render_pdf`` (the shared render pool)."""

    async def render_all() -> dict[str, bytes]:
        rendered = await asyncio.gather(*(render_pdf(letter_html(k), reference=REFERENCE) for k in KINDS))
        return dict(zip(KINDS, rendered, strict=True))

    return asyncio.run(render_all())


# ---------------------------------------------------------------------------------------- text with positions


@cache
def _font_metrics(bold: bool) -> tuple[dict[int, str], dict[str, tuple[int, int]], int, float, float]:
    font = TTFont(FONTS_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"))
    units = font["head"].unitsPerEm
    return (
        font.getBestCmap(),
        font["hmtx"].metrics,
        units,
        font["hhea"].ascent / units,
        -font["hhea"].descent / units,
    )


@dataclass(frozen=True)
class Fragment:
    """A run of text on a page, as a box in mm from the top-left corner of the sheet."""

    text: str
    left: float
    top: float
    right: float
    bottom: float
    size_pt: float

    def inside(self, left: float, top: float, width: float, height: float) -> bool:
        return (
            left <= self.left
            and self.right <= left + width
            and top <= self.top
            and self.bottom <= top + height
        )

    def overlaps(self, left: float, top: float, width: float, height: float) -> bool:
        return (
            self.left < left + width and left < self.right and self.top < top + height and top < self.bottom
        )


def fragments(pdf: bytes, page_number: int = 0) -> list[Fragment]:
    """Every text run with its box: start from the text matrix, width from the shipped font's advances."""
    page = PdfReader(io.BytesIO(pdf)).pages[page_number]
    height_pt = float(page.mediabox.height)
    found: list[Fragment] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        text = text.strip()
        if not text:
            return
        x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
        y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
        size_pt = size * abs(tm[3] * cm[3])
        cmap, advances, units, ascent, descent = _font_metrics("Bold" in str(font.get("/BaseFont", "")))
        width = sum(advances[cmap.get(ord(char), ".notdef")][0] for char in text) / units * size_pt
        baseline = (height_pt - y) * PT_TO_MM
        found.append(
            Fragment(
                text=text,
                left=x * PT_TO_MM,
                top=baseline - ascent * size_pt * PT_TO_MM,
                right=(x + width) * PT_TO_MM,
                bottom=baseline + descent * size_pt * PT_TO_MM,
                size_pt=size_pt,
            )
        )

    page.extract_text(visitor_text=visit)
    return found


def all_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


# ------------------------------------------------------------------------------------------------- content


@pytest.mark.parametrize("kind", KINDS)
def test_letter_pdf_carries_the_facts(pdfs: dict[str, bytes], kind: str) -> None:
    text = all_text(pdfs[kind])
    assert RECIPIENT[0] in text  # æ ø å Æ Ø Å survive: the font has them and the PDF maps them back
    for line in RECIPIENT[1]:
        assert line in text
    assert "1 250,00 kr" in text  # amount
    assert "1002340014" in text  # KID
    assert "1503 12 34562" in text  # account number
    assert "16. oktober 2026" in text  # deadline
    assert "Nordlys Energi AS" in text
    assert "Org.nr. 923456783" in text
    assert f"Vår referanse:\n{CONTACT_ID}" in text or f"Vår referanse: {CONTACT_ID}" in text


def test_the_inkassovarsel_says_what_it_is(pdfs: dict[str, bytes]) -> None:
    text = all_text(pdfs["inkassovarsel"]).lower()
    assert "inkassovarsel" in text
    assert "kan kravet bli sendt til inkasso" in text
    assert "inkasso" not in all_text(pdfs["reminder"]).lower()


@pytest.mark.parametrize("kind", KINDS)
def test_a4_and_page_numbers(pdfs: dict[str, bytes], kind: str) -> None:
    reader = PdfReader(io.BytesIO(pdfs[kind]))
    for page in reader.pages:
        width_mm = float(page.mediabox.width) * PT_TO_MM
        height_mm = float(page.mediabox.height) * PT_TO_MM
        assert (round(width_mm), round(height_mm)) == A4_MM
    pages = len(reader.pages)
    for number in range(pages):
        assert f"Side {number + 1} av {pages}" in reader.pages[number].extract_text()


async def test_a_long_letter_is_numbered_on_every_page() -> None:
    context = letter_context("inkassovarsel")
    context["case"]["costs"] = [
        {"kind": "invoice_fee", "label": f"Fakturagebyr {n}", "amount": Decimal("10.00")} for n in range(60)
    ]
    pdf = await render_pdf(letter_html("inkassovarsel", context), reference=REFERENCE)

    reader = PdfReader(io.BytesIO(pdf))
    pages = len(reader.pages)
    assert pages >= 2
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        assert f"Side {number} av {pages}" in text
        assert f"Ref: {REFERENCE}" in text


@pytest.mark.parametrize("kind", KINDS)
def test_machine_readable_reference_outside_the_window(pdfs: dict[str, bytes], kind: str) -> None:
    refs = [f for f in fragments(pdfs[kind]) if f.text.startswith("Ref: ")]
    assert [f.text for f in refs] == [f"Ref: {REFERENCE}"]
    assert re.fullmatch(r"Ref: [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", refs[0].text)
    assert not refs[0].overlaps(*WINDOW_MM)
    assert refs[0].top > 270  # in the bottom margin, on every page
    (page_number,) = [f for f in fragments(pdfs[kind]) if f.text.startswith("Side ")]
    assert not page_number.overlaps(*WINDOW_MM)


def test_letter_reference_refuses_ids_that_would_break_it() -> None:
    assert letter_reference("ct-1", "at_2") == "ct-1.at_2"
    for contact_id, attempt_id in (("a.b", "c"), ("a", 'b"'), ("", "x"), ("a", "b/c"), ("../x", "y")):
        with pytest.raises(PermanentChannelError, match="cannot be printed") as caught:
            letter_reference(contact_id, attempt_id)
        assert caught.value.reason == "invalid_id"


# ------------------------------------------------------------------------------------------- window (R7)


@pytest.mark.parametrize("kind", KINDS)
def test_recipient_address_lies_inside_the_window(pdfs: dict[str, bytes], kind: str) -> None:
    page = fragments(pdfs[kind])
    for line in (RECIPIENT[0], *RECIPIENT[1]):
        (fragment,) = [f for f in page if f.text == line]
        assert fragment.inside(*WINDOW_MM), (line, fragment, WINDOW_MM)
        # also inside whatever the sheet's play in the envelope leaves visible
        left, top, width, height = WINDOW_MM
        assert fragment.inside(left, top, width, height - WINDOW_PLAY_MM), fragment
        assert 9.99 <= fragment.size_pt <= 12.01  # Posten: 10-12 pt


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_address_shows_through_the_window(pdfs: dict[str, bytes], kind: str) -> None:
    page = fragments(pdfs[kind])
    left, top, width, height = WINDOW_MM
    play = WINDOW_PLAY_MM
    near_window = [
        f for f in page if f.overlaps(left - play, top - play, width + 2 * play, height + 2 * play)
    ]
    assert sorted(f.text for f in near_window) == sorted([RECIPIENT[0], *RECIPIENT[1]])
    assert not [f for f in near_window if "inkasso" in f.text.lower()]
    if kind == "inkassovarsel":  # the word is on the letter, only not where it shows
        outside = [f for f in page if "inkasso" in f.text.lower()]
        assert outside
        heading = next(f for f in page if f.text == "Inkassovarsel")
        assert heading.top > top + height + play


def test_window_constants_fit_the_sheet() -> None:
    left, top, width, height = WINDOW_MM
    assert (width, height) == (90.0, 45.0)  # DIN 680 window
    assert 15 <= left <= 25
    assert 45 <= top <= 55
    assert left + width < A4_MM[0] and top + height < A4_MM[1] / 2


# ---------------------------------------------------------------------------------------------- fonts


def embedded_fonts(pdf: bytes) -> dict[str, str]:
    """BaseFont → the full name inside the embedded font program, for every font on every page."""
    found: dict[str, str] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        resources: Any = page["/Resources"]
        for ref in resources["/Font"].values():
            font = ref.get_object()
            descendant = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
            program = descendant["/FontDescriptor"].get_object()["/FontFile2"].get_object().get_data()
            names = TTFont(io.BytesIO(program))["name"]
            found[str(font["/BaseFont"])] = str(names.getDebugName(4))
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_fonts_are_embedded(pdfs: dict[str, bytes], kind: str) -> None:
    fonts = embedded_fonts(pdfs[kind])
    assert sorted(fonts.values()) == ["DejaVu Sans", "DejaVu Sans Bold"]
    assert all(re.fullmatch(r"/[A-Z]{6}\+DejaVu-Sans(-Bold)?", name) for name in fonts)  # subset tag + name


def test_the_fonts_and_their_license_ship_with_the_templates() -> None:
    assert sorted(path.name for path in FONTS_DIR.iterdir()) == [
        "DejaVuSans-Bold.ttf",
        "DejaVuSans.ttf",
        "LICENSE",
        "fonts.conf",
    ]
    license_text = (FONTS_DIR / "LICENSE").read_text()
    assert "Bitstream Vera Fonts Copyright" in license_text
    assert "DejaVu changes are in public domain" in license_text


async def test_only_the_fonts_folder_is_used_not_the_machines_fonts(tmp_path: Path) -> None:
    # A fonts folder whose regular "DejaVuSans.ttf" is really the bold face: if the machine's DejaVu Sans
    # could win, the PDF would embed a regular face. It embeds only the folder's, so a machine's fonts never
    # change a letter.
    shutil.copy(FONTS_DIR / "DejaVuSans-Bold.ttf", tmp_path / "DejaVuSans.ttf")
    shutil.copy(FONTS_DIR / "DejaVuSans-Bold.ttf", tmp_path / "DejaVuSans-Bold.ttf")
    shutil.copy(FONTS_DIR / "fonts.conf", tmp_path / "fonts.conf")
    renderer = PdfRenderer(workers=1, fonts_dir=tmp_path)
    try:
        pdf = (await renderer.render(letter_html("reminder"), reference=REFERENCE)).pdf
    finally:
        await renderer.close()
    assert set(embedded_fonts(pdf).values()) == {"DejaVu Sans Bold"}
    assert RECIPIENT[0] in all_text(pdf)


# ------------------------------------------------------------------------------------- resource sandbox


def test_allowed_resources_are_data_urls_and_shipped_fonts() -> None:
    assert allowed_resource("data:text/css,p{}")
    assert allowed_resource((FONTS_DIR / "DejaVuSans.ttf").as_uri())
    assert not allowed_resource((FONTS_DIR / "missing.ttf").as_uri())
    assert not allowed_resource((FONTS_DIR / ".." / "messages" / "_letter" / "base.html").as_uri())
    assert not allowed_resource("file:///etc/passwd")
    assert not allowed_resource("file://evil.example/share/font.ttf")
    assert not allowed_resource("https://example.com/font.ttf")
    assert not allowed_resource("ftp://example.com/x.css")


async def test_a_letter_cannot_load_files_or_urls(tmp_path: Path) -> None:
    leak = tmp_path / "leak.css"
    leak.write_text('body::after { content: "LEAKED-FILE"; }')
    html = (
        "<html><head>"
        f'<link rel="stylesheet" href="{leak.as_uri()}">'
        '<link rel="stylesheet" href="http://127.0.0.1:9/leak.css">'
        '<link rel="stylesheet" href="data:text/css,body::before%7Bcontent:%22INLINE-OK%22%7D">'
        "</head><body><p>Hei Åse</p></body></html>"
    )
    text = all_text(await render_pdf(html))
    assert "INLINE-OK" in text
    assert "Hei Åse" in text
    assert "LEAKED" not in text


# ---------------------------------------------------------------------------------------- the render pool


@pytest.mark.slow
async def test_200_letters_render_while_the_event_loop_stays_responsive() -> None:
    html = {kind: letter_html(kind) for kind in KINDS}
    await render_pdf(html["reminder"])  # start the pool's workers first: spawning is not what we measure
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(HEARTBEAT_S)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    started = time.perf_counter()
    try:
        results = await asyncio.gather(
            *(render_pdf(html[KINDS[n % 2]], reference=f"ct{n:04d}.at{n:04d}") for n in range(200))
        )
    finally:
        stop.set()
        await beat
    elapsed = time.perf_counter() - started

    assert len(results) == 200
    assert all(pdf.startswith(b"%PDF-") for pdf in results)
    assert "Ref: ct0123.at0123" in PdfReader(io.BytesIO(results[123])).pages[0].extract_text()
    assert len(gaps) >= elapsed / MAX_HEARTBEAT_GAP_S  # it kept beating the whole time
    assert max(gaps) < MAX_HEARTBEAT_GAP_S, f"event loop stalled {max(gaps):.3f} s"


def test_print_letters_have_the_letter_limits() -> None:
    assert PrintLetterChannel.limits is LETTER_LIMITS
    assert (PrintLetterChannel.name, PrintLetterChannel.provider) == ("letter", "print")


@pytest.fixture
async def own_renderer() -> AsyncIterator[PdfRenderer]:
    renderer = PdfRenderer(workers=1)
    yield renderer
    await renderer.close()


async def test_a_renderer_reports_pages(own_renderer: PdfRenderer) -> None:
    rendered = await own_renderer.render(letter_html("inkassovarsel"), reference=REFERENCE)
    assert rendered.pages == len(PdfReader(io.BytesIO(rendered.pdf)).pages)
