"""Browser fixtures: Playwright driving Debian's chromium (never a downloaded browser). Missing =
failure."""

from __future__ import annotations

import os

import pytest

from ..integration.conftest import docker_engine, make_hub  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("GPUSPAWN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "test-artifacts"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    # module scope: Playwright's sync API keeps an event loop running while it lives, which later
    # tiers' asyncio.run() and pytest-jupyter must not find
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found; scripts/setup installs Debian's chromium", pytrace=False
        )
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    yield page
    context.close()


def screenshot(page, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    page.screenshot(path=path, full_page=True)
    return path


def login(page, hub, user, password="pw"):
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
