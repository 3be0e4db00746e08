"""Measure reveal.js decks as a projector shows them: every slide at 1280x720 in headless Chromium.

For each slide (each vertical sub-slide too) it reports the smallest body-text and code font in
screen pixels (computed font size x reveal's scale; math and headings are not body text) and
every element that sticks out of the slide (below or right of it) or is cut inside a box that
hides its overflow. tests/test_slides.py asserts on it; run it by hand on built decks:

    .venv/bin/python tests/slide_metrics.py notebooks/_build/slides/*.slides.html
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_helpers import Chromium  # noqa: E402

VIEWPORT = {"width": 1280, "height": 720}
MIN_BODY_PX, MIN_CODE_PX = 28, 22

MEASURE_SLIDE = """() => {
  const scale = Reveal.getScale();
  const box = document.querySelector('.reveal .slides').getBoundingClientRect();
  const slide = Reveal.getCurrentSlide();
  const code = 'pre, code, .highlight, .jp-CodeMirrorEditor, .jp-RenderedText';
  const skip = 'mjx-container, h1, h2, h3, h4, .lorakit-skip-font';
  let body = null, mono = null, smallest = null;
  const walker = document.createTreeWalker(slide, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || el.closest(skip) || !el.getClientRects().length) continue;
    const px = parseFloat(getComputedStyle(el).fontSize) * scale;
    if (el.closest(code)) { mono = mono === null ? px : Math.min(mono, px); }
    else if (body === null || px < body) { body = px; smallest = walker.currentNode.textContent.trim().slice(0, 40); }
  }
  const out = [];
  const describe = (el) => (el.tagName.toLowerCase() + '.' + [...el.classList].slice(0, 2).join('.') + ' "'
                            + (el.innerText || el.alt || '').trim().slice(0, 50) + '"');
  for (const el of [slide, ...slide.querySelectorAll('*')]) {
    if (el.closest('mjx-assistive-mml') || el.closest('details:not([open]) > :not(summary)')) continue;
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height) continue;
    if (r.bottom > box.bottom + 1) out.push('below by ' + Math.round((r.bottom - box.bottom) / scale) + 'px: ' + describe(el));
    else if (r.right > box.right + 1) out.push('right by ' + Math.round((r.right - box.right) / scale) + 'px: ' + describe(el));
    else if (!el.closest('mjx-container > *')) {   // MathJax clips inside its own glyphs by design
      const st = getComputedStyle(el);
      if (st.overflowX !== 'visible' && el.scrollWidth > el.clientWidth + 2) out.push('cut at the right: ' + describe(el));
      else if (st.overflowY !== 'visible' && el.scrollHeight > el.clientHeight + 2) out.push('cut at the bottom: ' + describe(el));
    }
  }
  return {body, code: mono, smallest, overflow: out.slice(0, 3)};
}"""


def measure_deck(browser, deck: Path) -> list[dict]:
    """One record per slide: ``{"slide": "h/v", "body", "code", "smallest", "overflow"}``."""
    page = browser.contexts[0].new_page()
    page.set_viewport_size(VIEWPORT)
    try:
        page.goto(deck.resolve().as_uri(), timeout=120_000)
        page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=60_000)
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000
        )
        page.evaluate("() => MathJax.startup.promise")
        page.evaluate("() => document.fonts.ready")
        page.evaluate("() => Reveal.configure({transition: 'none', backgroundTransition: 'none'})")
        shape = page.evaluate("""() => Reveal.getHorizontalSlides().map(
            s => Math.max(1, s.querySelectorAll(':scope > section').length))""")
        records = []
        for h, count in enumerate(shape):
            for v in range(count):
                page.evaluate(f"() => Reveal.slide({h}, {v})")
                page.wait_for_function(
                    "() => [...document.images].every(i => i.complete)", timeout=30_000
                )
                record = page.evaluate(MEASURE_SLIDE)
                record["slide"] = f"{h}/{v}"
                records.append(record)
    finally:
        page.close()
    return records


def summary(records: list[dict]) -> dict:
    """Slides, the smallest body and code font (px), and the slides that overflow."""
    bodies = [r["body"] for r in records if r["body"] is not None]
    codes = [r["code"] for r in records if r["code"] is not None]
    return {
        "slides": len(records),
        "min_body_px": round(min(bodies), 1) if bodies else None,
        "min_code_px": round(min(codes), 1) if codes else None,
        "overflowing": [f"{r['slide']}: {r['overflow'][0]}" for r in records if r["overflow"]],
        "small": [
            f"{r['slide']}: body {r['body']:.1f}px '{r['smallest']}'"
            for r in records
            if r["body"] is not None and r["body"] < MIN_BODY_PX
        ]
        + [
            f"{r['slide']}: code {r['code']:.1f}px"
            for r in records
            if r["code"] is not None and r["code"] < MIN_CODE_PX
        ],
    }


def measure(decks: list[Path]) -> dict[str, dict]:
    """``{deck name: summary}`` for every deck, in one headless Chromium."""
    from playwright.sync_api import sync_playwright

    results = {}
    with tempfile.TemporaryDirectory(prefix="lorakit-measure-", ignore_cleanup_errors=True) as tmp:
        chromium = Chromium(Path(tmp))
        try:
            endpoint = chromium.start()
            with sync_playwright() as pw:
                browser = pw.chromium.connect_over_cdp(
                    endpoint, timeout=180_000
                )  # slow on a busy machine
                try:
                    for deck in decks:
                        results[deck.name] = summary(measure_deck(browser, deck))
                finally:
                    browser.close()
        finally:
            chromium.stop()
    return results


if __name__ == "__main__":
    found = measure([Path(p) for p in sys.argv[1:]])
    for name, s in found.items():
        print(
            f"{name}: {s['slides']} slides, body >= {s['min_body_px']} px, code >= {s['min_code_px']} px, "
            f"{len(s['overflowing'])} overflowing"
        )
        for line in s["overflowing"] + s["small"]:
            print("   ", line)
    total = sum(s["slides"] for s in found.values())
    print(
        json.dumps(
            {
                "decks": len(found),
                "slides": total,
                "min_body_px": min(
                    (s["min_body_px"] for s in found.values() if s["min_body_px"]), default=None
                ),
                "min_code_px": min(
                    (s["min_code_px"] for s in found.values() if s["min_code_px"]), default=None
                ),
                "overflowing": sum(len(s["overflowing"]) for s in found.values()),
            }
        )
    )
