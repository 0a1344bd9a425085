"""Regenerate docs/img/backward_steps_page.png: python docs/img/make_html_screenshot.py

A screenshot of viz.save_html's page in headless Chromium (selenium, chromium and
chromedriver, as tests/test_viz_browser.py uses them), at step 4 of the lecture network's
backward with the first layer's weight clicked. Written next to this file, as a small
palette PNG.
"""

import os
import shutil
import tempfile

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tinygrad_mlp import Tensor, nn, viz

HERE = os.path.dirname(os.path.abspath(__file__))

rng = np.random.RandomState(1)
model = nn.Sequential(nn.Dense(784, 30, rng=rng), nn.Sigmoid(), nn.Dense(30, 10, rng=rng),
                      nn.Sigmoid())
X = Tensor(rng.uniform(-1, 1, (20, 784)).astype(np.float32), name="X")
cost = nn.BinaryCrossEntropy()(model(X), rng.randint(0, 10, 20)) + nn.l2_penalty(model, 0.01)
cost.name = "cost"

work = tempfile.mkdtemp()
page = os.path.join(work, "steps.html")
viz.save_html(cost, page, group=model)
options = webdriver.ChromeOptions()
options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--window-size=1500,640", f"--user-data-dir={work}/profile"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or
                                          "/usr/bin/chromedriver"), options=options)
try:
    driver.get("file://" + page)
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    driver.find_element(
        By.XPATH, "//div[@data-step='3']//*[local-name()='g'][@class='node']"
                  "[*[local-name()='title'][text()='t1']]").click()
    shot = os.path.join(work, "shot.png")
    driver.save_screenshot(shot)
finally:
    driver.quit()
image = Image.open(shot).convert("RGB")
image.quantize(colors=64).save(os.path.join(HERE, "backward_steps_page.png"), optimize=True)
shutil.rmtree(work, ignore_errors=True)
