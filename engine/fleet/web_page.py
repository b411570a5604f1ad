"""The page to restore with (`ilo serve --ui`, at GET /): one static file, web/index.html, plain
HTML and JavaScript shipped as package data, that calls the service's own POST /restore.

Why a static page and not Gradio mounted on the Serve app:
- install size: the page is one file of a few kilobytes with no dependency; Gradio brings some
  hundred megabytes of packages (FastAPI, its front end, pandas, ...) into the [ray] extra.
- batching and one solver path: the page is one more client of /restore, so its requests join the
  same `serve.batch` batches, limits and refusals as curl's; a Gradio app would call the model
  through its own queue and event handlers, a second way into the solver to keep equal.
- testability: the page is driven in headless Chromium by Selenium (tests/test_web_page.py)
  against the real service; its only contract is the documented HTTP API, rounds streamed as
  newline-delimited JSON (`round_stream`).
"""

from __future__ import annotations

import functools
from pathlib import Path

PAGE = Path(__file__).with_name("web") / "index.html"


@functools.cache
def page_html() -> bytes:
    """The page's bytes, read once per replica."""
    return PAGE.read_bytes()
