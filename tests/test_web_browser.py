"""``examples/web_app.py``'s page in a real browser: headless Chromium (Debian's ``chromium``
package) driven by Playwright uploads two documents and sees both complete with results."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web

from datalab_async import AsyncDatalabClient, PollPolicy
from datalab_async.local import LocalDatalab

from .test_web import DOCS, load_example

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "web_app.png"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium browser here and none could be installed "
    "(.ci/run installs Debian's package: apt-get install -y chromium)",
)


@pytest.fixture
async def page_url(datalab_local: LocalDatalab) -> AsyncIterator[str]:
    web_app = load_example("web_app")
    datalab_local.knobs = attrs.evolve(datalab_local.knobs, step_latency=0.2)
    pipeline_id = await datalab_local.seed_pipeline(
        ["convert", {"type": "extract", "settings": {"page_schema": web_app.INVOICE_SCHEMA}}]
    )

    def factory() -> AsyncDatalabClient:
        return AsyncDatalabClient(datalab_local.api_key, datalab_local.url)

    app = web_app.create_app(
        factory,
        pipeline_id,
        webhook_secret=datalab_local.webhook_secret,
        poll=PollPolicy(initial=0.1, max_interval=0.5),
    )
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        app[web_app.SETTINGS].webhook_url = f"http://{host}:{port}/webhooks/datalab"
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


async def test_two_uploads_complete_with_results_in_the_browser(
    page_url: str, tmp_path: Path
) -> None:
    """Also saves a screenshot; ``DATALAB_SCREENSHOT=1`` refreshes the README's copy."""
    playwright_api = pytest.importorskip("playwright.async_api")
    documents = [DOCS / "invoice-0001.pdf", DOCS / "invoice-0004.docx"]
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 700})
            errors: list[Any] = []
            page.on("pageerror", lambda error: errors.append(error))
            await page.goto(page_url)
            await page.set_input_files("#files", [str(p) for p in documents])
            await page.click("button[type=submit]")
            cards = page.locator("section.doc")
            await playwright_api.expect(cards).to_have_count(2)
            done = page.locator("section.doc[data-done=true]")
            await playwright_api.expect(done).to_have_count(2, timeout=30_000)
            for document in documents:
                card = page.locator(f'section.doc[data-name="{document.name}"]')
                await playwright_api.expect(card.locator(".status")).to_have_text("completed")
                steps = card.locator("ol.steps li")
                await playwright_api.expect(steps).to_have_text(
                    ["0 convert: completed", "1 extract: completed"]
                )
                results = card.locator("pre.result")
                await playwright_api.expect(results).to_have_count(2)
                assert "Invoice" in await results.first.inner_text()
                assert "invoice_number" in await results.nth(1).inner_text()
            assert not errors
            shot = tmp_path / "web_app.png"
            await page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("DATALAB_SCREENSHOT"):
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            await browser.close()
