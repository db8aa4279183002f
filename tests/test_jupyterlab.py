"""The interactive path in a real browser: JupyterLab (headless Debian Chromium, selenium) runs notebook 00
on a lab with its own prefix, taken from $LABTOOLS_PREFIX as `make lab` passes it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labtools.hosts import namespaces
from labtools.lab import Lab
from tests.conftest import ROOT

PREFIX = "pybr"
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = [
    pytest.mark.lab,  # the notebook brings the lab up
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                       "(`make test` installs them)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    port, token = _free_port(), "labtools-test"
    env = {**os.environ, "LABTOOLS_PREFIX": PREFIX, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "HOME": str(tmp_path)}  # fmt: skip
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--notebook-dir={ROOT}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        Lab(prefix=PREFIX).down()


def test_notebook_00_runs_in_jupyterlab_in_a_browser(jupyterlab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, token = jupyterlab
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1600,1200"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(f"{url}/lab/tree/notebooks/00-lab-setup.ipynb?token={token}")
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        time.sleep(2)  # the kernel starts
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel') and text()='Run']").click()
        driver.find_element(By.XPATH, "//div[contains(@class,'lm-Menu-itemLabel') and text()='Run All Cells']").click()
        done = "echo checks and the TCP transfer passed"

        def outputs(d) -> str:  # what the cells printed and showed (not their source)
            return "\n".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))

        WebDriverWait(driver, 300).until(lambda d: done in outputs(d) or "Traceback" in outputs(d))
        text = outputs(driver)
        assert "Traceback" not in text, text[-3000:]
        shot = ARTIFACTS / "jupyterlab-notebook-00.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        assert f"prefix {PREFIX}" in text  # $LABTOOLS_PREFIX reached the notebook's parameters
        assert "2001:db8:1234:5678:8:2:1:841" in text and "8900" in text  # the pings, jumbo ones included
        assert "MB received" in text  # the iperf3 transfer
        time.sleep(3)  # JupyterLab asks about news a few seconds after start, unless the settings say no
        assert "Jupyter news" not in driver.find_element(By.TAG_NAME, "body").text
        assert namespaces.lab_namespaces(PREFIX)  # the lab it brought up is this prefix's
    finally:
        driver.quit()
