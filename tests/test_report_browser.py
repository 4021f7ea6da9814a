"""The HTML report in a real browser: no console errors, every image loaded. Needs Debian's chromium and
chromium-driver (`make test` installs them); skipped with the reason when they are missing."""

import shutil
from pathlib import Path

import pytest

from conceptspace.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
def test_report_opens_without_errors_and_all_images_load(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    run = tmp_path / "micro"
    assert main(["run", str(ROOT / "configs" / "micro.yaml"), "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "train.steps=10", "--set", "train.n_checkpoints=3"]) == 0
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.get((run / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert len(images) >= 5
    assert all(done and width > 0 for done, width in images), images
    assert errors == []
