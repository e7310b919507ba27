"""Browser fixtures: headless Debian Chromium (Selenium, the system chromedriver) against the e2e Airflow."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_local import LocalAirflow
from tests.e2e import conftest as e2e
from tests.e2e.conftest import aws  # noqa: F401  (the e2e AWS clients, re-exported)

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
CHROMIUM = Path(os.environ.get("REELFORGE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("REELFORGE_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Flags for a closed network: no first-run, sync, component or background fetches; a throwaway profile.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1440,1000")


@pytest.fixture(scope="module")
def airflow() -> Iterator[LocalAirflow]:
    """The local Airflow with the e2e settings (``tests/e2e/conftest.py``).

    pytest keeps one session fixture per conftest and tests/browser runs before tests/e2e: an Airflow already
    up on :8080 (this session's) is reused; otherwise one is started for this module and stopped after it,
    so that tests/e2e can start its own.
    """
    client = LocalAirflow(STATE / "logs" / "airflow-e2e.log")
    if client._healthy():
        yield client
        return
    yield from e2e.airflow._get_wrapped_function()()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``out/browser/`` (ignored by git; CI keeps it), or ``$REELFORGE_BROWSER_ARTIFACTS``."""
    path = Path(os.environ.get("REELFORGE_BROWSER_ARTIFACTS", ROOT / "out" / "browser"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium with a fresh profile, driven through Debian's chromedriver (nothing downloaded)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            pytest.fail(f"{path} not found: install Debian's {package} (scripts/local-stack up does)", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="reelforge-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
