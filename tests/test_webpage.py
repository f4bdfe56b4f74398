"""The web page (nmt/web/) in a real headless Chromium against a real server: translate a
sentence, compare the page with the JSON API, hover the heatmap, switch to the argmax
alignment, show an API error, and check that the page never talks to another host.

Needs Debian's `chromium` and `chromium-driver` and the Python package `selenium`.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.browser import CELLS_SCRIPT, WAIT
from tests.server import running_server

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "nmt" / "web"
SENTENCE = "Ein Mann fährt Fahrrad."
MORE = ["Zwei Hunde spielen im Schnee.", "Kinder spielen."]
PARAGRAPH = "Ein Hund rennt. Eine Frau liest ein Buch."
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ helpers
def api(url: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    """(status, JSON) of a GET, or of a POST when `payload` is given."""
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server(browser):  # the browser is checked first: a missing one fails before the model loads
    with running_server("--model", "de-en", "--model", "en-de") as url:
        yield url


def save_screenshot(driver, path: Path) -> None:
    """A PNG of the whole page (the window is made as tall as the document)."""
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(1280, min(max(height, 800), 4000) + chrome)
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert path.is_file() and len(data) > len(PNG_MAGIC) and data.startswith(PNG_MAGIC)




# -------------------------------------------------------------------------- tests
def test_page_is_self_contained():
    """No CDN, no web fonts, no absolute URLs: the page works offline."""
    page = (WEB / "index.html").read_text(encoding="utf-8")
    for name in ("index.html", "app.js", "style.css"):
        text = (WEB / name).read_text(encoding="utf-8")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
    assert "@import" not in (WEB / "style.css").read_text(encoding="utf-8")
    references = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"([^\"]*)\"", page)
    assert "/static/app.js" in references and "/static/style.css" in references
    for reference in references:
        local = reference.startswith("/") and not reference.startswith("//")
        assert local or reference.startswith("data:"), reference
    for element_id in ("source", "translate", "translation", "heatmap", "mode-toggle", "error"):
        assert f'id="{element_id}"' in page


def test_page_translates_and_draws_the_attention(browser, server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, WAIT)
    find = driver.find_element

    def texts(selector: str) -> list[str]:
        return [node.text for node in driver.find_elements(By.CSS_SELECTOR, selector)]

    driver.get(server + "/")
    wait.until(lambda d: find(By.ID, "status").get_attribute("data-state") == "ready")

    # The header and the beam selector come from /health and /info.
    _, health = api(server, "/health")
    _, info = api(server, "/info")
    assert find(By.ID, "model-name").text == health["checkpoint"]
    assert find(By.ID, "model-score").text == health["score"]
    assert find(By.ID, "model-attention").text == health["attention_mode"]
    assert find(By.ID, "model-bleu").text == f"{info['metrics']['val_bleu']:.1f}"
    beam_select = Select(find(By.ID, "beam"))
    limits = info["limits"]
    assert [o.get_attribute("value") for o in beam_select.options] == \
        [str(beam) for beam in range(1, limits["max_beam"] + 1)]
    assert beam_select.first_selected_option.get_attribute("value") == str(limits["default_beam"])
    assert find(By.ID, "error").is_displayed() is False
    assert find(By.ID, "heatmap").is_displayed() is False  # nothing translated yet

    # Translate one sentence with a chosen beam; the button shows that it is busy meanwhile.
    beam = 1 if limits["default_beam"] != 1 else 2
    beam_select.select_by_value(str(beam))
    source = find(By.ID, "source")
    source.clear()
    source.send_keys(SENTENCE)
    driver.execute_script("""
        window.busyStates = [];
        new MutationObserver(() => window.busyStates.push(
            document.getElementById('translate').disabled)).observe(
            document.getElementById('translate'), {attributes: true});""")
    find(By.ID, "translate").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap .cell")
               and not d.find_element(By.ID, "translate").get_attribute("disabled"))
    assert True in driver.execute_script("return window.busyStates")  # disabled while busy

    status, answer = api(server, "/translate", {"text": SENTENCE, "beam": beam})
    assert status == 200
    expected = answer["translations"][0]
    assert find(By.ID, "translation").text == expected["translation"]
    assert f"beam {beam}" in find(By.ID, "meta").text
    sources, targets = expected["source_tokens"], expected["target_tokens"]
    assert texts("#heatmap .col-label") == sources  # "▁" is shown, quietly
    assert texts("#heatmap .row-label") == targets

    # One element per (target, source) pair, carrying the API's tokens and weights.
    cells = driver.execute_script(CELLS_SCRIPT)
    assert len(cells) == len(targets) * len(sources)
    for row, col, source_token, target_token, weight, marked, _ in cells:
        assert source_token == sources[col] and target_token == targets[row]
        assert weight == pytest.approx(expected["attention"][row][col], abs=1e-6)
        assert not marked  # soft weights: no cell is singled out
    colours = {colour for *_, colour in cells}
    assert len(colours) > 1  # the weights are drawn as colours

    # Hovering a cell shows its tokens and weight, and highlights its row and column.
    row = min(1, len(targets) - 1)
    col = max(range(len(sources)), key=lambda j: expected["attention"][row][j])
    cell = find(By.CSS_SELECTOR, f'#heatmap .cell[data-row="{row}"][data-col="{col}"]')
    ActionChains(driver).move_to_element(cell).perform()
    tooltip = find(By.ID, "tooltip")
    wait.until(lambda d: tooltip.is_displayed())
    assert tooltip.find_element(By.CLASS_NAME, "tip-source").text == sources[col]
    assert tooltip.find_element(By.CLASS_NAME, "tip-target").text == targets[row]
    shown = tooltip.find_element(By.CLASS_NAME, "tip-weight").text
    assert shown.startswith(f"{expected['attention'][row][col]:.4f}"), shown
    assert "hover" in find(By.CSS_SELECTOR, f'.row-label[data-row="{row}"]').get_attribute("class")
    assert "hover" in find(By.CSS_SELECTOR, f'.col-label[data-col="{col}"]').get_attribute("class")

    # The argmax alignment marks exactly one cell per row: the row's largest weight.
    toggle = find(By.ID, "mode-toggle")
    assert toggle.get_attribute("aria-checked") == "false"
    toggle.click()
    assert toggle.get_attribute("aria-checked") == "true"
    cells = driver.execute_script(CELLS_SCRIPT)
    marked = [(r, c) for r, c, *_, is_marked, _ in cells if is_marked]
    weights = expected["attention"]
    assert sorted(marked) == [(r, weights[r].index(max(weights[r]))) for r in range(len(targets))]
    marked_colours = {colour for *_, is_marked, colour in cells if is_marked}
    other_colours = {colour for *_, is_marked, colour in cells if not is_marked}
    assert len(marked_colours) == 1 and not marked_colours & other_colours
    save_screenshot(driver, tmp_path / "argmax.png")
    toggle.click()
    assert not [c for c in driver.execute_script(CELLS_SCRIPT) if c[5]]
    save_screenshot(driver, tmp_path / "translation.png")

    # Several lines: every line is translated and gets its own heatmap.
    source = find(By.ID, "source")
    source.clear()
    source.send_keys("\n".join([SENTENCE, *MORE]))
    source.send_keys(Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter submits
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#heatmap .sentence")) == 3
               and not d.find_element(By.ID, "translate").get_attribute("disabled"))
    status, answer = api(server, "/translate", {"texts": [SENTENCE, *MORE], "beam": beam})
    assert status == 200
    assert texts("#translation .translation-text") == \
        [item["translation"] for item in answer["translations"]]
    assert len(driver.execute_script(CELLS_SCRIPT)) == sum(
        len(item["source_tokens"]) * len(item["target_tokens"]) for item in answer["translations"])

    # A paragraph: one translated line, one heatmap per sentence.
    source.clear()
    source.send_keys(PARAGRAPH)
    source.send_keys(Keys.CONTROL, Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#heatmap .sentence")) == 2
               and not d.find_element(By.ID, "translate").get_attribute("disabled"))
    status, answer = api(server, "/translate", {"text": PARAGRAPH, "beam": beam})
    assert status == 200 and len(answer["translations"]) == 2
    assert texts("#translation .translation-text") == [answer["lines"][0]["translation"]]
    labels = texts("#heatmap .sentence .index")
    assert labels == ["1.1", "1.2"]

    # An empty text: the API's error message is shown and the old results are cleared.
    source.clear()
    source.send_keys(Keys.CONTROL, Keys.ENTER)
    error = find(By.ID, "error")
    wait.until(lambda d: error.is_displayed())
    status, refusal = api(server, "/translate", {"text": "", "beam": beam})
    assert status == 422
    assert refusal["error"]["message"] in error.text and "422" in error.text
    assert not driver.find_elements(By.CSS_SELECTOR, "#heatmap .cell")
    assert not find(By.ID, "translation").is_displayed()
    save_screenshot(driver, tmp_path / "error.png")

    # The page asked this server only, and ran without script errors.
    origin = urllib.parse.urlsplit(server)
    requested = driver.execute_script(
        "return performance.getEntries().map(e => e.name).filter(n => n.includes(':'))")
    assert requested and any(name.endswith("/static/app.js") for name in requested)
    for name in requested:
        parts = urllib.parse.urlsplit(name)
        assert parts.scheme in ("http", "data") and (parts.scheme == "data" or
                                                      parts.netloc == origin.netloc), name
    problems = [entry["message"] for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE" and "status of 422" not in entry["message"]]
    assert not problems


def test_swap_button_turns_the_direction_around(browser, server):
    """de-en and en-de served together: the swap button switches the model, the labels and
    the examples, and sends the translation back as the new input, as online translators do."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, WAIT)
    find = driver.find_element
    driver.get(server + "/")
    wait.until(lambda d: find(By.ID, "status").get_attribute("data-state") == "ready")
    assert find(By.ID, "direction").is_displayed()
    assert not find(By.ID, "model-select").is_displayed()  # two models: the swap reaches both

    def shown() -> tuple[str, ...]:
        return tuple(find(By.ID, name).text for name in (
            "model-name", "source-language", "target-language", "source-label"))

    assert shown() == ("de-en", "German", "English", "German text")
    source = find(By.ID, "source")
    source.clear()
    source.send_keys("Kannst du mir bitte helfen?")
    find(By.ID, "translate").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap .cell")
               and not d.find_element(By.ID, "translate").get_attribute("disabled"))
    _, german_to_english = api(server, "/translate", {"text": "Kannst du mir bitte helfen?",
                                                      "model": "de-en"})
    english = german_to_english["translations"][0]["translation"]
    assert find(By.ID, "translation").text == english

    find(By.ID, "swap").click()
    wait.until(lambda d: shown() == ("en-de", "English", "German", "English text"))
    assert source.get_attribute("value") == english and source.get_attribute("lang") == "en"
    _, english_to_german = api(server, "/translate", {"text": english, "model": "en-de"})
    german = english_to_german["translations"][0]["translation"]
    wait.until(lambda d: d.find_element(By.ID, "translation").text == german
               and not d.find_element(By.ID, "translate").get_attribute("disabled"))
    chips = [chip.text for chip in driver.find_elements(By.CSS_SELECTOR, "#examples .chip")]
    assert "A man is riding a bike." in chips
    find(By.ID, "swap").click()
    wait.until(lambda d: shown()[0] == "de-en" and source.get_attribute("value") == german)
