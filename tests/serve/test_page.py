"""The page in a real browser: Debian's headless Chromium, driven by selenium, picks a video
and shows its class."""

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in [*HEADLESS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_a_picked_video_shows_its_class_and_timeline(server, browser, long_video, videos):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser.get(url)
    answer = browser.find_element(By.ID, "answer")
    browser.find_element(By.ID, "video").send_keys(videos["green"])
    WebDriverWait(browser, 60).until(lambda _: answer.is_displayed() and answer.text == "green")
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .row")
    assert len(bars) == 3 and bars[0].text.startswith("green")
    assert not browser.find_element(By.ID, "timeline").is_displayed()

    browser.find_element(By.ID, "video").send_keys(long_video)
    strip = browser.find_element(By.ID, "strip")
    WebDriverWait(browser, 60).until(lambda _: strip.is_displayed())
    segments = [block.text for block in strip.find_elements(By.CLASS_NAME, "segment")]
    assert segments == ["red", "green", "blue"]
    assert answer.text in {"red", "green", "blue"}
