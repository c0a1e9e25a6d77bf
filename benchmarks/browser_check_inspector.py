"""Browser check of tutorial 08's token inspector in JupyterLab (not part of pytest or CI).

Starts JupyterLab on this checkout, opens a copy of ``notebooks/08_token_inspector.ipynb``
(fast mode) in headless Chromium driven by Selenium, runs all cells with the real widget
front end, moves the inspector's "scale k" slider with the keyboard, and checks that the
token maps and the decoded views follow. It reports what k3d's WebGL view does headless and
saves screenshots under ``build/browser_check/`` (git-ignored).

Needs Debian's browser and driver and Selenium (no browser download):

    apt-get install -y chromium chromium-driver
    .venv/bin/pip install selenium
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/browser_check_inspector.py

``--webgl`` picks the browser's GL back end, one run each: ``default`` (what headless
Chromium does on its own), ``swiftshader`` (software WebGL, ``--enable-unsafe-swiftshader``),
``disabled`` (no WebGL at all).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "build" / "browser_check"
GL_FLAGS = {"default": [], "swiftshader": ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
            "disabled": ["--disable-gpu", "--disable-webgl", "--disable-3d-apis"]}
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab in front
WEBGL_PROBE = """
const c = document.createElement('canvas');
const gl = c.getContext('webgl2') || c.getContext('webgl');
if (!gl) return null;
const ext = gl.getExtension('WEBGL_debug_renderer_info');
return {version: gl.getParameter(gl.VERSION),
        renderer: ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)};
"""
LAB_SETTINGS = {  # no news pop-up, no update check; keep every cell in the DOM
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str, log) -> subprocess.Popen:
    settings = OUT / "lab-settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(OUT / "lab-workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={REPO}", "--ServerApp.password="]
    if os.geteuid() == 0:  # containers often run as root
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.nice(19), start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log.name}")
            time.sleep(1)
    raise RuntimeError(f"jupyter lab did not answer on port {port} within 120 s; see {log.name}")


def shutdown_kernels(port: int, token: str) -> None:
    """Ask our server to shut down the kernels it started (they run in their own sessions)."""
    base = f"http://127.0.0.1:{port}/api/kernels"
    try:
        kernels = json.load(urllib.request.urlopen(f"{base}?token={token}", timeout=10))
        for k in kernels:
            req = urllib.request.Request(f"{base}/{k['id']}?token={token}", method="DELETE")
            urllib.request.urlopen(req, timeout=30)
    except OSError as err:
        print(f"could not shut the kernels down: {err}", file=sys.stderr)


def notebook_copy(mode: str, checkpoint: str | None = None) -> Path:
    """The tutorial in fast mode, next to notebooks/ (so ../data_samples still resolves)."""
    nb = nbformat.read(REPO / "notebooks" / "08_token_inspector.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = first.source.replace("fast = False", "fast = True", 1)
    if checkpoint:
        first.source = first.source.replace("checkpoint = None", f"checkpoint = {str(Path(checkpoint).resolve())!r}", 1)
    path = REPO / "build" / f"08_token_inspector_browser_{mode}.ipynb"
    nbformat.write(nb, path)
    return path


def make_driver(mode: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2600",
                 *GL_FLAGS[mode]]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is still changing under us
            pass
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def pixel_std(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32).std())


def outputs_text(driver) -> str:
    """The text of the front notebook's cell outputs (not of its sources)."""
    from selenium.webdriver.common.by import By

    return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-OutputArea"))


def run_all_cells(driver) -> None:
    """Command mode, select every cell (Ctrl+A), run them (Shift+Enter): no menu markup to depend on."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.CSS_SELECTOR, f"{PANEL} .jp-Cell .jp-InputPrompt").click()
    (ActionChains(driver).send_keys(Keys.ESCAPE).pause(0.5)
     .key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).pause(0.5)
     .key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform())


def check(mode: str, port: int, token: str, timeout: float, checkpoint: str | None = None) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path = notebook_copy(mode, checkpoint)
    report = {"mode": mode, "flags": GL_FLAGS[mode], "checkpoint": checkpoint or "default"}
    driver = make_driver(mode)
    try:
        report["webgl"] = driver.execute_script(WEBGL_PROBE)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{path.relative_to(REPO)}?reset&token={token}")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f"{PANEL} .jp-Cell .jp-InputPrompt"), 180,
                 "the notebook")
        wait_for(lambda: "Idle" in driver.find_element(By.ID, "jp-main-statusbar").text, 180, "an idle kernel", poll=2)
        t0 = time.time()
        run_all_cells(driver)
        wait_for(lambda: "shown scale:" in outputs_text(driver), timeout, "the last cell's output", poll=3)
        report["run_all_seconds"] = round(time.time() - t0, 1)
        report["widgets_detected"] = "widgets: yes" in outputs_text(driver)
        report["error_outputs"] = len(driver.find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"))
        app = wait_for(lambda: driver.find_element(
            By.XPATH, "//div[contains(@class,'widget-vbox')][.//*[contains(text(),'Per-scale 3D tokens')]]"), 60,
            "the inspector widget")
        slider = app.find_element(By.XPATH, ".//div[contains(@class,'widget-slider')]"
                                            "[.//label[contains(text(),'scale k')]]")

        def state():
            return {"k": slider.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip(),
                    "cells": app.find_element(By.TAG_NAME, "table").get_attribute("outerHTML").count("<td"),
                    "decoded_src": app.find_elements(By.CSS_SELECTOR, "img")[0].get_attribute("src")}

        driver.execute_script("arguments[0].scrollIntoView()", app)
        time.sleep(3)
        before = state()
        shots = {"before": OUT / f"{mode}_inspector_k{before['k']}.png"}
        app.screenshot(str(shots["before"]))
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        handle.click()
        handle.send_keys(Keys.ARROW_RIGHT)  # one scale up; the kernel re-decodes and sends new images
        after = wait_for(lambda: (s := state())["k"] != before["k"] and s["decoded_src"] != before["decoded_src"]
                         and s, 120, "the app to show the next scale")
        time.sleep(3)  # let k3d redraw
        shots["after"] = OUT / f"{mode}_inspector_k{after['k']}.png"
        app.screenshot(str(shots["after"]))
        shots["page"] = OUT / f"{mode}_page.png"
        driver.save_screenshot(str(shots["page"]))
        report.update(slider_before=before["k"], slider_after=after["k"], token_cells_before=before["cells"],
                      token_cells_after=after["cells"], decoded_image_changed=before["decoded_src"] != after["decoded_src"])
        canvases = app.find_elements(By.TAG_NAME, "canvas")
        report["k3d_canvases"] = len(canvases)
        report["k3d_canvas_pixel_std"] = [round(pixel_std(c.screenshot_as_png), 2) for c in canvases
                                          if c.size["width"] > 0 and c.size["height"] > 0]
        report["k3d_note"] = app.find_element(By.XPATH, ".//*[contains(text(),'3D, scales')]/..").text
        logs = driver.get_log("browser")
        report["console_k3d_webgl"] = [e["message"][:300] for e in logs
                                       if any(w in e["message"] for w in ("K3D", "k3d", "WebGL", "webgl", "GL_"))][:10]
        report["console_errors"] = [e["message"][:300] for e in logs if e["level"] == "SEVERE"][:10]
        report["screenshots"] = {k: str(v.relative_to(REPO)) for k, v in shots.items()}
    except Exception:
        driver.save_screenshot(str(OUT / f"{mode}_failure.png"))
        raise
    finally:
        driver.quit()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--webgl", default="default,swiftshader", help="comma list of: " + ", ".join(GL_FLAGS))
    parser.add_argument("--checkpoint", help="a VQVAE folder for the notebook (default: the shipped one)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the notebook to run")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.webgl.split(",") if m.strip()]
    if unknown := [m for m in modes if m not in GL_FLAGS]:
        parser.error(f"unknown --webgl {unknown}: choose from {list(GL_FLAGS)}")
    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(binary).exists():
            print(f"{binary} is missing: apt-get install -y chromium chromium-driver", file=sys.stderr)
            return 2
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("selenium is missing: .venv/bin/pip install selenium", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / "lab-workspaces", ignore_errors=True)  # no tabs restored from an earlier run
    port, token = free_port(), secrets.token_hex(16)
    reports = []
    with open(OUT / "jupyterlab.log", "w") as log:
        lab = start_lab(port, token, log)
        try:
            for mode in modes:
                try:
                    reports.append(check(mode, port, token, args.timeout, args.checkpoint))
                except Exception as err:  # report and go on with the next mode
                    reports.append({"mode": mode, "failed": f"{type(err).__name__}: {err}"})
                print(json.dumps(reports[-1], indent=2), flush=True)
        finally:
            shutdown_kernels(port, token)
            lab.terminate()  # the server we started, by its id
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:  # it sometimes hangs while stopping its extensions
                lab.kill()
                lab.wait(timeout=10)
    (OUT / "report.json").write_text(json.dumps(reports, indent=2))
    print(f"report: {OUT / 'report.json'}")
    return 0 if all("failed" not in r for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
