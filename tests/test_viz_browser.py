"""viz.save_html's page in a real headless Chromium (selenium): the arrow keys, the
buttons and the slider change the frame, a click on a node shows its shape, the console
stays free of errors and the page requests nothing.

Chromium and chromedriver are system packages (Debian: chromium, chromium-driver; .ci/run
installs them) and selenium is the `browser` extra: this test needs them and runs, it
does not skip.
"""

import json
import re
import shutil
import tempfile

import numpy as np
import pytest

from tinygrad_mlp import Tensor, nn, viz

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tinygrad-mlp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The lecture's network (4-6-3 here), its steps page, and the page's data."""
    rng = np.random.RandomState(0)
    model = nn.Sequential(nn.Dense(4, 6, rng=rng, dtype=np.float64), nn.Sigmoid(),
                          nn.Dense(6, 3, rng=rng, dtype=np.float64), nn.Sigmoid())
    X = Tensor(rng.normal(size=(5, 4)), name="X")
    cost = nn.BinaryCrossEntropy()(model(X), rng.randint(0, 3, 5)) + nn.l2_penalty(model, 0.1)
    cost.name = "cost"
    path = tmp_path_factory.mktemp("page") / "steps.html"
    viz.save_html(cost, path, group=model, rankdir="TB")
    text = path.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="tg-data">(.*?)</script>', text, re.S).group(1))
    cost.backward()
    return path, text, data, model


def frame(driver):
    return int(driver.find_element("tag name", "body").get_attribute("data-frame"))


def visible_frames(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.tg-frame'))"
        ".filter(f => !f.hidden && f.getBoundingClientRect().height > 0)"
        ".map(f => f.dataset.step)")


def test_the_page_in_chromium(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path, text, data, model = page
    n = len(data["frames"])
    assert n == 6
    browser.get(path.as_uri())
    title = browser.find_element(By.ID, "tg-title")
    assert frame(browser) == 0 and visible_frames(browser) == ["0"]
    assert title.text == data["frames"][0]["title"]
    assert title.text.startswith("step 1 of 6: backward of add")

    # arrow keys
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    assert frame(browser) == 1 and visible_frames(browser) == ["1"]
    assert title.text.startswith("step 2 of 6")
    body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert frame(browser) == 3
    body.send_keys(Keys.ARROW_LEFT)
    assert frame(browser) == 2

    # buttons
    prev, nxt = browser.find_element(By.ID, "tg-prev"), browser.find_element(By.ID, "tg-next")
    nxt.click()
    assert frame(browser) == 3
    prev.click()
    prev.click()
    prev.click()
    assert frame(browser) == 0 and not prev.is_enabled() and nxt.is_enabled()
    prev.click()  # disabled at the first frame
    assert frame(browser) == 0

    # the slider, moved with its own keys
    slider = browser.find_element(By.ID, "tg-slider")
    slider.send_keys(Keys.END)
    assert frame(browser) == n - 1 and visible_frames(browser) == [str(n - 1)]
    assert not nxt.is_enabled()
    slider.send_keys(Keys.ARROW_LEFT)
    assert frame(browser) == n - 2 and slider.get_attribute("value") == str(n - 2)
    slider.send_keys(Keys.END)

    # a click on a node: the first layer's weight, on the last frame
    node = [k for k, v in data["nodes"].items() if v.get("name") == "0.weight"][0]
    target = browser.find_element(
        By.XPATH, f"//div[@data-step='{n - 1}']//*[local-name()='g'][@class='node']"
                  f"[*[local-name()='title'][text()='{node}']]")
    target.click()
    info = browser.find_element(By.ID, "tg-info")
    assert info.get_attribute("data-node") == node
    shown = info.text
    assert "0.weight" in shown and "(4, 6)" in shown and "float64" in shown, shown
    norm = f"{np.linalg.norm(model[0].weight.grad):.4g}"
    assert f"norm {norm}" in shown, shown  # its gradient, known at the last step
    # stepping back to the first frame: that gradient is not known yet
    body.send_keys(*[Keys.ARROW_LEFT] * n)  # one past the first frame: stays there
    assert frame(browser) == 0
    assert "not known yet at this step" in info.text

    # nothing was requested, and the console has no errors
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert not re.search(r"https?:", text)
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
