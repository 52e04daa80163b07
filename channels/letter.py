"""Letters on paper: the PDF renderer every letter channel shares, and the ``letter`` channel of the print
provider.

Rendering
    ``render_pdf(html)`` turns a letter template's HTML into an A4 PDF with WeasyPrint in a small pool of
    *spawned* worker processes: rendering is CPU-bound and never runs on the event loop, and the process that
    owns the event loop never imports WeasyPrint. Each worker sees only the fonts shipped in
    ``templates/fonts/`` (DejaVu Sans and DejaVu Sans Bold, Bitstream Vera/DejaVu license in the same folder):

    - they are loaded with ``@font-face`` from that folder by a stylesheet added to every letter;
    - a worker points ``FONTCONFIG_FILE`` at ``templates/fonts/fonts.conf`` before WeasyPrint starts, so the
      fonts installed on the machine are invisible to it (without this a system "DejaVu Sans" would win over
      the ``@font-face`` of the same name) and every family, generic or not, resolves to the shipped files;
    - the URL fetcher allows ``data:`` URLs and files inside the fonts folder, nothing else: a letter never
      reaches the network or the rest of the file system.

    So æ ø å and every other glyph render identically on a laptop, in CI and on a server with no fonts at all.

    The same added stylesheet (the letter *frame*) prints, in the bottom margin of every page, the page
    number ("Side 1 av 2") and our reference as a machine-readable line, ``Ref: <contact id>.<attempt id>``,
    so that a returned letter (or a photo of one) finds its contact and attempt. The templates own the rest.

Window envelope
    :data:`WINDOW_MM` is the part of page 1 that shows through the window of the envelope; the letter
    templates (``templates/messages/_letter/base.html``) put the recipient's name and address, and nothing
    else, inside it (R7: no "inkasso" may show through the window), with a keep-out band of
    :data:`WINDOW_PLAY_MM` around it for the sheet's play inside the envelope. Sources: see :data:`WINDOW_MM`.

Print provider
    :class:`PrintLetterChannel` renders the letter and hands the PDF to a :class:`channels.print_provider.
    PrintBatcher`, which delivers batches to the provider's drop folder or SFTP server. ``send`` returns only
    once the letter's batch has been durably delivered; its receipt names our reference and the batch.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from channels.base import (
    ChannelLimits,
    Outgoing,
    PermanentChannelError,
    PostalAddress,
    Receipt,
    TransientChannelError,
)
from channels.outbox import LETTER_LIMITS
from channels.print_provider import PrintBatcher, PrintLetter
from orchestrator.rendering import templates_root

__all__ = [
    "A4_MM",
    "DEFAULT_RENDER_WORKERS",
    "FONTS_DIR",
    "MAX_ADDRESS_LINES",
    "WINDOW_MM",
    "WINDOW_PLAY_MM",
    "PdfRenderer",
    "PrintLetterChannel",
    "RenderedPdf",
    "allowed_resource",
    "close_default_renderer",
    "letter_reference",
    "render_letter_sync",
    "render_pdf",
    "render_pdf_sync",
]

A4_MM: Final = (210.0, 297.0)

# The window of a left-window envelope, as it lies on page 1: (left, top, width, height) in mm from the
# top-left corner of the A4 sheet.
#
# Sources:
# - DIN 680 (window envelopes, sizes and window position) and ISO 269 (envelope sizes): the DL/E65
#   (110 x 220 mm) and C6/5 envelopes have a 90 x 45 mm window 20 mm from the left edge and 15 mm from the
#   bottom edge, i.e. 110 - 15 - 45 = 50 mm below the top edge of a DL/E65 envelope. (de.wikipedia.org
#   "DIN lang"; glstd.com summary of DIN 680:2008-02.)
# - DIN 5008 form B, the sheet-side counterpart made for those envelopes: the address field is 85 x 45 mm,
#   20 mm from the left and 45 mm from the top of the sheet; text starts at the 25 mm left margin.
#   (din-5008-richtlinien.de "Anschriftenfeld"; sekretaria.de "Absender".)
# - Norwegian envelope stock varies: officeconsult.no ("plassering av mottakerfelt i vinduskonvolutter") lists
#   C5 windows 44 mm from the top and 35 x 105 mm, E6/5 40 mm and 30 x 95 mm, most 15 mm from the left. The
#   print provider inserts into its own C5/E65 left-window stock, so WINDOW_MM is the contract we hand it, and
#   the address block sits in the part that all of these show (25-105 mm across, 52-70 mm down for the first
#   four lines).
# - Posten's rules for the address (as summarised by 21grams.se "Adressera rätt i Norge"): 10-12 pt, one
#   regular font, straight left edge, no bold, no blank lines, line spacing 1-1.5.
#
# The sheet is folded with the address panel against the top of the envelope; a 105 mm panel in a 110 mm
# DL/E65 envelope can slip up to 5 mm, so the window may reveal 45-95 mm of the sheet: nothing but the address
# may be printed within WINDOW_PLAY_MM of the window (the templates keep 15-115 mm x 45-100 mm clear).
WINDOW_MM: Final = (20.0, 50.0, 90.0, 45.0)
WINDOW_PLAY_MM: Final = 5.0
# Address lines besides the name and "postal code city" (and the country abroad) that fit the window and the
# manifest's address_line_1..4 columns.
MAX_ADDRESS_LINES: Final = 4

FONTS_DIR: Final = templates_root() / "fonts"
FONT_FACES: Final = (("DejaVuSans.ttf", "normal"), ("DejaVuSans-Bold.ttf", "bold"))

DEFAULT_RENDER_WORKERS: Final = max(1, min(4, os.cpu_count() or 1))

# Ids become a file name in the batch and a CSS string in the frame: no separators, quotes or backslashes.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class RenderedPdf:
    pdf: bytes = field(repr=False)
    pages: int


def letter_reference(contact_id: str, attempt_id: str) -> str:
    """Our reference on a letter and in the print manifest: ``<contact id>.<attempt id>``."""
    for label, value in (("contact_id", contact_id), ("attempt_id", attempt_id)):
        if not _SAFE_ID.fullmatch(value):
            raise PermanentChannelError(
                "invalid_id", f"{label} {value[:64]!r} cannot be printed as a letter reference"
            )
    return f"{contact_id}.{attempt_id}"


# ------------------------------------------------------------------------------------------ the render worker
# Everything from here to PdfRenderer runs in the render worker processes (spawned: they import this module
# afresh). ``render_letter_sync`` also works in any process, but only a worker started by PdfRenderer is cut
# off from the machine's fonts (FONTCONFIG_FILE must be set before fontconfig starts).

_WORKER_LOCK = threading.Lock()
_FONT_SETUP: dict[str, tuple[Any, Any, Any]] = {}  # fonts dir → (FontConfiguration, @font-face CSS, fetcher)


class _QuietWeasyPrint(logging.Filter):
    """Drops the per-letter notice that fonts are subset with fontTools (no libharfbuzz-subset here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using fontTools instead of HarfBuzz-Subset")


_QUIET = _QuietWeasyPrint()


def _import_weasyprint() -> Any:  # the module; WeasyPrint ships no type hints
    # WeasyPrint announces every rendering step at INFO and fontTools (font subsetting) is chatty too.
    for name in ("weasyprint", "weasyprint.progress", "fontTools"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("weasyprint").addFilter(_QUIET)  # a no-op when it is already there
    with warnings.catch_warnings():
        # Emitted on import where the system lacks libharfbuzz-subset; WeasyPrint then subsets fonts with
        # fontTools, which is fine. Under ``-W error`` (spawned workers inherit it) it would kill the worker.
        warnings.filterwarnings(
            "ignore", message="HarfBuzz-Subset will be required", category=DeprecationWarning
        )
        # Emitted on import when fontconfig finds no system fonts: letters bring their own (@font-face).
        warnings.filterwarnings("ignore", message="FontConfig cannot load default config file")
        warnings.filterwarnings("ignore", message="No fonts configured in FontConfig")
        import weasyprint
    return weasyprint


def allowed_resource(url: str, fonts_dir: Path = FONTS_DIR) -> bool:
    """May a letter load ``url``? Only ``data:`` URLs and files inside the shipped fonts folder."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data":
        return True
    if scheme != "file" or parts.netloc not in ("", "localhost"):
        return False
    path = Path(unquote(parts.path)).resolve()
    return path.is_file() and path.is_relative_to(fonts_dir.resolve())


def _fetcher(weasyprint: Any, fonts_dir: Path) -> Any:
    class LetterUrlFetcher(weasyprint.URLFetcher):  # type: ignore[misc]  # untyped base class
        def fetch(self, url: str, headers: Any = None) -> Any:
            if not allowed_resource(url, fonts_dir):
                raise ValueError(
                    f"a letter may load data: URLs and its shipped fonts only, not {url[:100]!r}"
                )
            return super().fetch(url, headers)

    return LetterUrlFetcher(allowed_protocols={"data", "file"}, timeout=5)


def _font_face_css(fonts_dir: Path) -> str:
    rules = [
        f'@font-face {{ font-family: "DejaVu Sans"; font-style: normal; font-weight: {weight}; '
        f'src: url("{(fonts_dir / name).resolve().as_uri()}") format("truetype"); }}'
        for name, weight in FONT_FACES
    ]
    return "\n".join(rules)


def _frame_css(reference: str | None) -> str:
    """The letter frame: page number bottom right on every page, our reference bottom left."""
    box = 'font-family: "DejaVu Sans"; font-size: 7.5pt; color: #000; vertical-align: top; padding-top: 4mm;'
    css = (
        "@page { @bottom-right { "
        f'content: "Side " counter(page) " av " counter(pages); text-align: right; {box} }} }}'
    )
    if reference is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", reference):  # never trust a string inside CSS quotes
            raise ValueError(f"invalid letter reference {reference[:80]!r}")
        css += f' @page {{ @bottom-left {{ content: "Ref: {reference}"; text-align: left; {box} }} }}'
    return css


def _fonts(weasyprint: Any, fonts_dir: Path) -> tuple[Any, Any, Any]:
    """Per worker and fonts folder, made once: the font configuration, the @font-face CSS, the URL fetcher."""
    key = str(fonts_dir)
    with _WORKER_LOCK:
        setup = _FONT_SETUP.get(key)
        if setup is None:
            from weasyprint.text.fonts import FontConfiguration

            font_config = FontConfiguration()
            fetcher = _fetcher(weasyprint, fonts_dir)
            css = weasyprint.CSS(
                string=_font_face_css(fonts_dir), font_config=font_config, url_fetcher=fetcher
            )
            setup = _FONT_SETUP[key] = (font_config, css, fetcher)
        return setup


def _init_render_worker(fonts_dir: str) -> None:
    """Pool initializer: cut the worker off from the machine's fonts, then pay for the import once."""
    conf = Path(fonts_dir) / "fonts.conf"
    if conf.is_file():
        os.environ["FONTCONFIG_FILE"] = str(conf)
        os.environ.pop("FONTCONFIG_PATH", None)
    weasyprint = _import_weasyprint()
    _fonts(weasyprint, Path(fonts_dir))


def render_letter_sync(html: str, reference: str | None = None, fonts_dir: str | None = None) -> RenderedPdf:
    """Render one letter (in the calling process): the PDF and its page count."""
    weasyprint = _import_weasyprint()
    folder = Path(fonts_dir) if fonts_dir is not None else FONTS_DIR
    font_config, font_css, fetcher = _fonts(weasyprint, folder)
    frame = weasyprint.CSS(string=_frame_css(reference), font_config=font_config)
    document = weasyprint.HTML(string=html, url_fetcher=fetcher).render(
        stylesheets=[font_css, frame], font_config=font_config
    )
    return RenderedPdf(pdf=bytes(document.write_pdf()), pages=len(document.pages))


def render_pdf_sync(html: str, reference: str | None = None) -> bytes:
    """Render one letter to PDF bytes in the calling process (blocking; a pool runs this, not the loop)."""
    return render_letter_sync(html, reference).pdf


# --------------------------------------------------------------------------------------------- the pool


class PdfRenderer:
    """A pool of spawned render workers. ``render`` never blocks the event loop; errors are channel errors:
    ``letter_render_failed`` (permanent: the same HTML fails the same way) or ``letter_render_unavailable``
    (transient: a worker died; the pool is started afresh on the next letter)."""

    def __init__(self, *, workers: int = DEFAULT_RENDER_WORKERS, fonts_dir: Path | None = None) -> None:
        if workers < 1:
            raise ValueError("a PdfRenderer needs at least one worker")
        self._workers = workers
        self._fonts_dir = (fonts_dir if fonts_dir is not None else FONTS_DIR).resolve()
        self._executor: ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"PdfRenderer(workers={self._workers}, fonts_dir={str(self._fonts_dir)!r})"

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers,
                # "spawn": no fork of a process that runs threads and an event loop.
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_render_worker,
                initargs=(str(self._fonts_dir),),
            )
        return self._executor

    async def render(self, html: str, *, reference: str | None = None) -> RenderedPdf:
        loop = asyncio.get_running_loop()
        executor = self._pool()
        try:
            future = loop.run_in_executor(executor, render_letter_sync, html, reference, str(self._fonts_dir))
        except (RuntimeError, OSError) as exc:  # the pool cannot start a worker or is shut down
            self._discard(executor)
            raise TransientChannelError(
                "letter_render_unavailable", f"PDF renderer unavailable: {exc}"
            ) from exc
        try:
            return await future
        except BrokenProcessPool as exc:  # a worker died (killed, out of memory): start afresh next time
            self._discard(executor)
            raise TransientChannelError("letter_render_unavailable", f"PDF renderer died: {exc}") from exc
        except Exception as exc:  # the same HTML fails the same way every time
            raise PermanentChannelError(
                "letter_render_failed", f"cannot render the letter: {type(exc).__name__}: {str(exc)[:200]}"
            ) from exc

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


_default_renderer: PdfRenderer | None = None


def _default() -> PdfRenderer:
    global _default_renderer
    if _default_renderer is None:
        _default_renderer = PdfRenderer()
    return _default_renderer


async def render_pdf(html: str, *, reference: str | None = None) -> bytes:
    """Render a letter to PDF bytes in the shared render pool (started on first use)."""
    return (await _default().render(html, reference=reference)).pdf


async def close_default_renderer() -> None:
    """Stop the shared render pool (it starts again on the next ``render_pdf``)."""
    global _default_renderer
    renderer, _default_renderer = _default_renderer, None
    if renderer is not None:
        await renderer.close()


# ------------------------------------------------------------------------------------------ the channel


def _check_address(address: PostalAddress) -> None:
    lines = [line.strip() for line in address.lines]
    if not lines or not all(lines):
        raise PermanentChannelError("invalid_postal_address", "the postal address has no (or an empty) line")
    if len(lines) > MAX_ADDRESS_LINES:
        raise PermanentChannelError(
            "invalid_postal_address",
            f"the postal address has {len(lines)} lines; at most {MAX_ADDRESS_LINES} fit the envelope window",
        )
    if not address.postal_code.strip() or not address.city.strip():
        raise PermanentChannelError(
            "invalid_postal_address", "the postal address lacks a postal code or city"
        )
    if (address.country or "NO") == "NO" and not re.fullmatch(r"\d{4}", address.postal_code.strip()):
        raise PermanentChannelError(
            "invalid_postal_address",
            f"Norwegian postal codes have 4 digits, not {address.postal_code[:16]!r}",
        )


class PrintLetterChannel:
    """The ``letter`` channel through a print provider: render, batch, deliver (drop folder or SFTP).

    ``send`` needs ``message.html`` (the rendered letter template) and ``message.postal_address`` (what goes
    in the manifest the provider addresses and sorts by). It returns once the batch holding the letter is
    delivered: ``Receipt(provider="print", provider_message_id="<contact id>.<attempt id>",
    detail={"batch": <batch id>, "pages": <pages>})``. The channel owns the batcher: ``close`` delivers what
    is pending and closes it. It also owns its renderer (``render_workers`` processes), unless one is passed
    in, which is then left to its owner (several channels may share one).
    """

    name: str = "letter"
    provider: str = "print"
    limits: ChannelLimits = LETTER_LIMITS

    def __init__(
        self,
        batcher: PrintBatcher,
        *,
        renderer: PdfRenderer | None = None,
        render_workers: int = DEFAULT_RENDER_WORKERS,
    ) -> None:
        self._batcher = batcher
        self._owns_renderer = renderer is None
        self._renderer = renderer if renderer is not None else PdfRenderer(workers=render_workers)

    def __repr__(self) -> str:
        return f"PrintLetterChannel(batcher={self._batcher!r})"

    @property
    def batcher(self) -> PrintBatcher:
        return self._batcher

    async def send(self, message: Outgoing) -> Receipt:
        if message.html is None:
            raise PermanentChannelError(
                "letter_requires_html", "a letter is rendered from HTML; none was given"
            )
        address = message.postal_address
        if address is None:
            raise PermanentChannelError(
                "letter_requires_postal_address",
                "a printed letter needs message.postal_address (lines, postal code, city) for the manifest",
            )
        _check_address(address)
        if not message.recipient_name.strip():
            raise PermanentChannelError("invalid_postal_address", "a printed letter needs a recipient name")
        reference = letter_reference(message.contact_id, message.attempt_id)
        rendered = await self._renderer.render(message.html, reference=reference)
        letter = PrintLetter(
            reference=reference,
            contact_id=message.contact_id,
            attempt_id=message.attempt_id,
            recipient_name=message.recipient_name.strip(),
            address=address,
            pdf=rendered.pdf,
            pages=rendered.pages,
        )
        batch_id = await self._batcher.submit(letter)
        return Receipt(
            provider=self.provider,
            provider_message_id=reference,
            detail={"batch": batch_id, "pages": rendered.pages},
        )

    async def close(self) -> None:
        try:
            await self._batcher.close()
        finally:
            if self._owns_renderer:
                await self._renderer.close()
