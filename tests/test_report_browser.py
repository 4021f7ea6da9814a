"""The HTML report in a real browser: no console errors, every image loaded. Needs Debian's chromium and
chromium-driver (`make test` installs them); skipped with the reason when they are missing."""

import shutil
from pathlib import Path

import pytest

from conceptspace.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")


needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                   reason="chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def micro_report(tmp_path_factory):
    run = tmp_path_factory.mktemp("browser") / "micro"
    assert main(["run", str(ROOT / "configs" / "micro.yaml"), "--run-dir", str(run), "--set", "probe.kind=analytic",
                 "--set", "train.steps=10", "--set", "train.n_checkpoints=3"]) == 0
    return run / "report.html"


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@needs_browser
def test_report_opens_without_errors_and_all_images_load(micro_report, browser):
    browser.get(micro_report.as_uri())
    images = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth]);")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert len(images) >= 5
    assert all(done and width > 0 for done, width in images), images
    assert errors == []


@needs_browser
def test_explorer_slider_shows_each_checkpoint(micro_report, browser):
    browser.get(micro_report.as_uri())
    state = ("const s = document.getElementById('explorer-slider');"
             "return [s.value, s.max, document.getElementById('explorer-step').textContent,"
             " document.getElementById('explorer-classes').src,"
             " document.getElementById('explorer-acc').textContent,"
             " Array.from(document.querySelectorAll('.cur-marker')).map(m => m.getAttribute('cx') + ',' + m.getAttribute('cy')),"
             " document.getElementById('explorer-elicit-img') ? document.getElementById('explorer-elicit-img').src : null,"
             " document.getElementById('explorer-elicit').style.display];")
    last = browser.execute_script(state)
    assert int(last[0]) == int(last[1]) >= 2 and last[2].startswith("step 10 ")  # opens at the last checkpoint
    browser.execute_script("const s = document.getElementById('explorer-slider'); s.value = 0;"
                           "s.dispatchEvent(new Event('input'));")
    first = browser.execute_script(state)
    assert first[0] == "0" and first[2].startswith("step ") and first[2] != last[2]
    assert first[3] != last[3] and first[3].startswith("data:image/png;base64,")  # that checkpoint's generations
    assert first[5] != last[5]  # the markers moved along the trajectories
    assert first[6] != last[6] and first[7] == ""  # the elicitations' generations change too
    # hovering a checkpoint of a trajectory moves the slider there (points: class by class, checkpoint by checkpoint)
    browser.execute_script("document.querySelectorAll('.hover-point')[1].dispatchEvent(new Event('mouseenter'));")
    assert browser.execute_script(state)[0] == "1"
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


@needs_browser
def test_sweep_report_runs_can_be_picked(tmp_path, browser):
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": str(ROOT / "configs" / "micro.yaml"), "grid": {"seed": [0, 1]},
                                    "set": {"probe.kind": "analytic", "train.steps": 6, "train.n_checkpoints": 2,
                                            "train.first_checkpoint": 3, "elicit.methods": ["naive"],
                                            "eval.n_samples": 4, "sampler.n_steps": 3}}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "sw"), "--workers", "2"]) == 0
    browser.get((tmp_path / "sw" / "sweep_report.html").as_uri())
    shown = "return Array.from(document.querySelectorAll('.run-line')).map(l => l.style.display);"
    assert browser.execute_script(shown) == ["", ""]  # both runs ticked at first
    browser.execute_script("const b = document.getElementById('run-1'); b.checked = false;"
                           "b.dispatchEvent(new Event('change'));")
    assert browser.execute_script(shown) == ["", "none"]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
