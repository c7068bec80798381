"""The pages in a real browser: headless Chromium (Debian's) driven by selenium against a real `lyrictool serve`.

Needs ``chromium`` and ``chromium-driver`` (``.ci/install-browser``) and the selenium package (dev extra); skipped
with the reason otherwise.  Screenshots go to ``$LYRICTOOL_SCREENSHOTS`` (default: a pytest tmp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
selenium = pytest.importorskip("selenium", reason="pip install selenium (the dev extra) for the browser tests")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium/chromedriver: apt-get install chromium chromium-driver "
                                       "fonts-noto-cjk (.ci/install-browser)")

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from serve_helpers import free_port, start_serve

ROOT = Path(__file__).resolve().parents[1]
KEY = "browser-key-456"
# Three songs from two systems; one carries markup that must show as text, never as HTML.
SONGS = [
    {"system": "base", "prompt_id": "p1", "controls": {"topic": "故乡", "rhyme": "江阳"},
     "lyrics": "[Verse]\n月亮照在大江上\n风吹麦浪好风光\n\n[Chorus]\n我们一起唱\n回到故乡"},
    {"system": "sft", "prompt_id": "p1", "controls": {"topic": "故乡", "rhyme": "江阳"},
     "lyrics": "[Verse]\n<b>粗体</b>不是标签<img src=x>\n老屋门前的月光"},
    {"system": "sft", "prompt_id": "p2", "controls": {"topic": "海", "rhyme": "发花"},
     "lyrics": "[Verse]\n海风吹过我的家\n浪花开成一朵花"},
]


class Server:
    """`lyrictool serve recipes/tiny/serve.yaml` (pages on) on a loopback port, restartable on the same port."""

    def __init__(self, study: Path, log: Path, cache: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.study, self.log, self.cache = study, log, cache
        self.proc = None

    def start(self):
        self.proc = start_serve(["recipes/tiny/serve.yaml", "--api-key", KEY, "--set", f"pages.study={self.study}",
                                 "--set", "seed=0", "--set", "limits.max_tokens=64",
                                 "--set", "limits.default_max_tokens=48"],
                                self.port, self.log, cwd=ROOT, env={"LYRICTOOL_CACHE": str(self.cache)})

    def kill(self):
        """SIGKILL: no shutdown code runs, like a crash or an OOM kill."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    path = Path(os.environ.get("LYRICTOOL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from lyrictool.eval.study import Study

    path = tmp_path_factory.mktemp("study") / "study.db"
    tokens = Study.create(path, SONGS, seed=1).add_raters(["ann"])
    return {"path": path, "token": tokens["ann"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory, study):
    srv = Server(study["path"], tmp_path_factory.mktemp("log") / "serve.log", tmp_path_factory.mktemp("cache"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1100", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver, path: Path) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))


def wait(driver, condition, timeout=60):
    return WebDriverWait(driver, timeout).until(condition)


def test_playground_streams_lyrics_and_shows_the_coloured_rhyme_analysis(server, browser, shots):
    browser.get(server.base + "/")
    assert browser.find_element(By.ID, "keybox").is_displayed()  # the server has a key: the page asks for it
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "topic").send_keys("夏天")
    browser.find_element(By.ID, "genre").send_keys("民谣")
    Select(browser.find_element(By.ID, "rhyme")).select_by_value("江阳")
    browser.find_element(By.ID, "generate").click()

    table = wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "table.analysis")))
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr.line")
    shown = {row.get_attribute("data-group") for row in rows}
    for row in rows:  # every line carries its group's colour class and the group's name
        group = row.get_attribute("data-group")
        classes = row.get_attribute("class").split()
        assert any(c.startswith("g") and c != "line" for c in classes)
        assert row.find_element(By.CSS_SELECTOR, ".chip").text == (group or "—")
        if group and group != "江阳":
            assert "miss" in classes  # off the requested group: marked
    if "江阳" in shown:
        assert not any("miss" in r.get_attribute("class") for r in rows if r.get_attribute("data-group") == "江阳")
    rhyme = browser.find_element(By.CSS_SELECTOR, '.met[data-control="rhyme"]')
    assert rhyme.text.startswith(("✓", "✗")) and "rhyme" in rhyme.text
    assert browser.find_element(By.CSS_SELECTOR, '.met[data-control="structure"]')
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    screenshot(browser, shots / "playground.png")

    # best-of-n: every candidate with its rewards, best first
    best_of = browser.find_element(By.ID, "best-of")
    best_of.clear()
    best_of.send_keys("3")
    browser.find_element(By.ID, "generate").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card .rewards")) == 3)
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    scores = [float(c.find_element(By.CSS_SELECTOR, ".rewards b").text.split()[1]) for c in cards]
    assert scores == sorted(scores, reverse=True) and "best" in cards[0].get_attribute("class")
    assert "rhyme" in cards[0].find_element(By.CSS_SELECTOR, ".rewards").text
    screenshot(browser, shots / "playground-best-of.png")
    cards[0].find_element(By.CSS_SELECTOR, "button.copy").click()
    wait(browser, lambda d: "已复制" in cards[0].find_element(By.CSS_SELECTOR, "button.copy").text, 5)

    # the page went through the public API only: one streamed chat completion, one /v1/lyrics
    scrape = httpx.get(server.base + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for route in ("/v1/chat/completions", "/v1/lyrics"):
        assert f'lyrictool_requests_total{{route="{route}",status="200"}} 1.0' in scrape, route


def test_playground_without_the_key_reports_it(server, browser):
    browser.get(server.base + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(server.base + "/")
    browser.find_element(By.ID, "api-key").clear()
    browser.find_element(By.ID, "generate").click()
    wait(browser, lambda d: "API key" in d.find_element(By.ID, "status").text, 20)
    assert "error" in browser.find_element(By.ID, "status").get_attribute("class")


def _rate(browser, scores: dict[str, int]) -> None:
    for aspect, score in scores.items():
        fieldset = browser.find_element(By.CSS_SELECTOR, f'fieldset.aspect[data-aspect="{aspect}"]')
        fieldset.find_element(By.CSS_SELECTOR, f'input[value="{score}"]').find_element(By.XPATH, "..").click()
        wait(browser, lambda d, f=fieldset: "answered" in f.get_attribute("class"), 10)


def _on_sample(browser, n: int, done: int, total: int = 3) -> str:
    wait(browser, lambda d: d.find_element(By.ID, "sample-title").text.startswith(f"Sample 第 {n} / {total}"), 15)
    wait(browser, lambda d: d.find_element(By.ID, "progress-text").text.startswith(f"{done} / {total}"), 15)
    return browser.find_element(By.ID, "lyrics").text


def test_rating_resumes_after_reload_and_survives_a_killed_server(server, browser, shots, study):
    from lyrictool.eval.mos import ASPECTS

    def key(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if line.strip())

    by_lyrics = {key(s["lyrics"]): s["system"] for s in SONGS}
    entered: list[tuple[str, dict[str, int]]] = []  # (system, scores) as the rater gave them

    def scores_for(k: int) -> dict[str, int]:
        return {a: (k + j) % 5 + 1 for j, a in enumerate(ASPECTS)}

    browser.get(server.base + f"/rate#token={study['token']}")
    for k in (1, 2):
        shown = _on_sample(browser, k, done=k - 1)
        _rate(browser, scores_for(k))
        entered.append((by_lyrics[key(shown)], scores_for(k)))
        if k == 1:
            screenshot(browser, shots / "rate.png")
        browser.find_element(By.ID, "next").click()

    browser.refresh()  # closed tab / reload: back at the first sample not yet rated
    shown = _on_sample(browser, 3, done=2)
    third = scores_for(3)
    first_two = dict(list(third.items())[:2])
    _rate(browser, first_two)

    server.kill()  # mid-study, mid-sample
    server.start()
    browser.refresh()
    _on_sample(browser, 3, done=2)
    for aspect in ASPECTS:  # the two answers given before the crash are there, the rest are not
        checked = browser.find_elements(By.CSS_SELECTOR, f'fieldset[data-aspect="{aspect}"] input:checked')
        assert [int(c.get_attribute("value")) for c in checked] == ([third[aspect]] if aspect in first_two else [])
    assert not browser.find_element(By.ID, "next").is_enabled()
    _rate(browser, {a: s for a, s in third.items() if a not in first_two})
    entered.append((by_lyrics[key(shown)], third))
    browser.find_element(By.ID, "next").click()
    wait(browser, ec.visibility_of_element_located((By.ID, "done")), 15)
    assert browser.find_element(By.ID, "progress-text").text.startswith("3 / 3")
    screenshot(browser, shots / "rate-done.png")

    # the markup in a sample's lyrics was shown as text
    browser.find_element(By.ID, "review").click()
    for n in (1, 2, 3):
        text = _on_sample(browser, n, done=3)
        if "粗体" in text:
            assert "<b>粗体</b>" in text and not browser.find_elements(By.CSS_SELECTOR, "#lyrics b, #lyrics img")
        if n < 3:
            browser.find_element(By.ID, "next").click()

    # eval --mos-ratings on the study database: MOS = per system, the mean over its items of the item means
    out = subprocess.run([sys.executable, "-m", "lyrictool", "eval", "--mos-ratings", str(study["path"]),
                          "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    mos = json.loads(out.stdout)["mos"]
    assert mos["n_ratings"] == 3 and mos["raters"] == ["ann"]
    for system in ("base", "sft"):
        for aspect in ASPECTS:
            given = [s[aspect] for name, s in entered if name == system]
            assert mos["mos"][system][aspect]["mean"] == pytest.approx(sum(given) / len(given))
            assert mos["mos"][system][aspect]["n"] == len(given)
