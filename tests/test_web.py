"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

Search by text and see thumbnails; a deep link; click a hit and watch it from its start
second; an image query; the login form; the sources page showing a real local UDP stream
(ffmpeg) going down and coming back, and a live hit played from the stream's recording.
Screenshots go to the test's artifacts folder ($PYSTREAM_ARTIFACTS, default
<pytest tmp>/web-screenshots); the README's are copies of them (docs/screenshots/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from web_site import REPO, browser_missing, build_site, free_port, serve, start_browser

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))

QUERY = "a red circle moves to the left"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    d = Path(os.environ.get("PYSTREAM_ARTIFACTS") or tmp_path_factory.mktemp("web-screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {d}")
    return d


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(site):
    url, srv = serve(site)
    yield url
    srv.should_exit = True


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def wait(driver, cond, timeout=30, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d))
    except Exception:
        raise AssertionError(f"timed out waiting for {what}; browser log: "
                             f"{driver.get_log('browser')[-5:]}") from None


def page_state(driver):
    return driver.execute_script("return document.body.dataset.state")


def results(driver):
    wait(driver, lambda d: page_state(d) in ("results", "error"), 60, "search results")
    assert page_state(driver) == "results", driver.find_element("id", "summary").text
    return driver.find_elements("css selector", "#results .card")


def thumbnails_loaded(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length")


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_text_query_shows_thumbnails(server, browser, artifacts):
    browser.get(server + "/")
    box = browser.find_element("id", "q")
    box.send_keys(QUERY)
    box.submit()
    cards = results(browser)
    assert cards, "no result cards"
    wait(browser, lambda d: thumbnails_loaded(d) == len(cards), 20, "thumbnails")
    first = cards[0].text
    assert "recordings" in first and "recording_" in first, first
    # The URL became a deep link of this search.
    assert urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)["q"] == [QUERY]
    browser.save_screenshot(str(artifacts / "search.png"))


def test_deep_link_opens_with_its_results(server, browser, artifacts):
    # A time filter in file seconds (the rendered recordings are undated): only clips that
    # overlap [20, 30] s, of source "recordings", as separate windows (collapse=0).
    q = urllib.parse.urlencode({"q": QUERY, "source": "recordings", "since": 20, "until": 30,
                                "collapse": "0", "k": 48})
    browser.get(f"{server}/?{q}")
    cards = results(browser)
    assert cards
    assert browser.find_element("id", "q").get_attribute("value") == QUERY
    chip = browser.find_element("css selector", '.chip[data-source="recordings"]')
    assert chip.get_attribute("aria-pressed") == "true"
    assert browser.find_element("id", "range-preset").get_attribute("value") == "custom"
    starts = [float(c.get_attribute("data-start")) for c in cards]
    api = get_json(f"{server}/search?" + urllib.parse.urlencode(
        {"q": QUERY, "source": "recordings", "since": 20, "until": 30, "k": 48}))
    assert sorted(starts) == sorted(h["start"] for h in api["hits"])  # the page shows what the API says
    assert all(h["end"] >= 20 and h["start"] <= 30 for h in api["hits"])
    # A source that has no rows: the page says so.
    browser.get(f"{server}/?" + urllib.parse.urlencode({"q": QUERY, "source": "dock"}))
    assert results(browser) == []
    assert "No results" in browser.find_element("id", "summary").text


def test_click_a_hit_plays_from_its_start(server, browser, artifacts):
    browser.get(f"{server}/?" + urllib.parse.urlencode({"q": "a green star", "collapse": "0"}))
    cards = results(browser)
    api = get_json(f"{server}/search?" + urllib.parse.urlencode({"q": "a green star", "k": 24}))
    # A hit that does not start at 0 s, so that seeking matters; in an MP4 (played directly).
    target = next(h for h in api["hits"] if h["offset"] and h["offset"] >= 8 and h["file"].endswith(".mp4"))
    card = next(c for c in cards if c.get_attribute("data-id") == target["id"])
    browser.execute_script(
        "const v = document.getElementById('video'); window.__firstPlaying = null;"
        "v.addEventListener('playing', () => { if (window.__firstPlaying === null) "
        "window.__firstPlaying = v.currentTime; });")
    browser.execute_script("arguments[0].scrollIntoView()", card)
    card.click()
    wait(browser, lambda d: d.execute_script("return window.__firstPlaying !== null"), 30,
         "the video to play")
    first = browser.execute_script("return window.__firstPlaying")
    assert abs(first - target["offset"]) <= 1.0, (first, target)
    t1 = browser.execute_script("return document.getElementById('video').currentTime")
    time.sleep(1.5)
    t2, paused, mode = browser.execute_script(
        "const v = document.getElementById('video'); return [v.currentTime, v.paused, v.dataset.mode]")
    assert not paused and t2 > t1 + 0.5, (t1, t2, paused)  # it plays
    assert mode == "direct"
    assert target["file"] in browser.find_element("id", "player-title").text
    browser.save_screenshot(str(artifacts / "player.png"))


def test_remuxed_recording_plays(server, browser):
    """The MKV copy: the server cuts the span into an MP4; the player seeks within it."""
    api = get_json(f"{server}/search?" + urllib.parse.urlencode({"q": QUERY, "k": 48,
                                                                  "source": "recordings"}))
    target = next(h for h in api["hits"] if h["file"].endswith(".mkv") and h["offset"] >= 8)
    info = get_json(f"{server}/play/{urllib.parse.quote(target['id'])}")
    assert info["mode"] == "remux" and "start=" in info["url"]
    browser.get(f"{server}/?" + urllib.parse.urlencode({"q": QUERY, "k": 48, "collapse": "0",
                                                         "play": target["id"]}))
    results(browser)
    wait(browser, lambda d: d.execute_script(
        "const v = document.getElementById('video'); return v.readyState >= 2 && !v.paused"),
        40, "the remuxed span to play")
    t = browser.execute_script("return document.getElementById('video').currentTime")
    assert info["offset"] - 0.5 <= t <= info["offset"] + 2.5, (t, info)


def _frame_png(path: Path, second: float, out: Path) -> Path:
    import av
    from PIL import Image

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if f.time is not None and f.time >= second:
                Image.fromarray(f.to_ndarray(format="rgb24")).save(out)
                return out
    raise AssertionError("no frame")


def test_image_query(server, browser, site, artifacts, tmp_path):
    img = _frame_png(site["videos"] / "recording_01.mp4", 20.0, tmp_path / "query.png")
    browser.get(server + "/")
    browser.find_element("id", "image-file").send_keys(str(img))
    cards = results(browser)
    assert cards
    assert browser.find_element("id", "image-chip").is_displayed()
    assert "for the image" in browser.find_element("id", "summary").text
    wait(browser, lambda d: thumbnails_loaded(d) == len(cards), 20, "thumbnails")
    # An exact frame of recording_01 finds recording_01 first.
    assert "recording_01.mp4" in cards[0].text, [c.text for c in cards[:3]]
    browser.save_screenshot(str(artifacts / "image-query.png"))


def test_login_form_with_a_token(site, browser, artifacts):
    token = "s3cret-token-for-the-web-test"
    url, srv = serve(site, token=token, host="0.0.0.0")
    try:
        browser.delete_all_cookies()
        browser.get(f"{url}/?q=" + urllib.parse.quote(QUERY))
        form = browser.find_element("id", "login")  # the 401 page is the login form
        browser.save_screenshot(str(artifacts / "login.png"))
        browser.find_element("id", "token").send_keys("wrong-token-wrong-token")
        form.submit()
        wait(browser, lambda d: "Wrong token" in d.page_source, 10, "the wrong-token message")
        browser.find_element("id", "token").send_keys(token)
        browser.find_element("id", "login").submit()
        # Back on the page we asked for, signed in: the search runs with the cookie.
        assert results(browser)
        assert urllib.parse.urlparse(browser.current_url).path == "/"
        assert browser.find_element("id", "logout").is_displayed()
        cookie = browser.get_cookie("pystream_session")
        assert cookie and cookie["httpOnly"] and cookie["value"] != token
        browser.find_element("css selector", "#logout button").click()
        wait(browser, lambda d: d.find_elements("id", "login"), 10, "the login form again")
    finally:
        srv.should_exit = True
        browser.delete_all_cookies()


# ----------------------------------------------------------------------------- live stream

def _write_h264(frames, path: Path, fps: int, gop: int) -> None:
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps, options={"g": str(gop), "preset": "veryfast"})
        st.width = st.height = frames.shape[1]
        st.pix_fmt = "yuv420p"
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def _ffmpeg_available():
    return shutil.which("ffmpeg") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _ffmpeg_available(), reason="ffmpeg is not installed")
def test_sources_page_shows_a_stream_going_down_and_back(browser, artifacts, tmp_path):
    """pystreamd with a live UDP stream (an ffmpeg sender), recorded; the sources page follows
    the sender being killed and restarted; a live hit plays from the recording."""
    from streams import ffmpeg_udp
    from pystream.synthetic.videos import render_stream_frames

    clip = tmp_path / "cam.mp4"
    frames, _ = render_stream_frames(5, 24, size=128, fps=1.0)
    _write_h264(np.repeat(frames, 4, axis=0), clip, fps=4, gop=4)  # a keyframe every second
    udp = free_port()
    http = free_port()
    rec = tmp_path / "rec"
    cfg = {
        "archive": str(tmp_path / "archive"), "state_dir": str(tmp_path / "state"),
        "model": "shipped", "sample_fps": 1.0, "coarse_windows": 0,
        "writer": {"batch_rows": 4, "flush_interval_s": 0.2},
        "batching": {"max_wait_s": 0.05},
        "http": {"host": "127.0.0.1", "port": http},
        "log": {"level": "INFO", "format": "json"},
        "sources": [{"type": "stream", "name": "cam1", "url": f"udp://127.0.0.1:{udp}",
                     "open_timeout_s": 2, "read_timeout_s": 2, "stall_timeout_s": 3,
                     "backoff_initial_s": 0.3, "backoff_max_s": 1,
                     "record": {"dir": str(rec), "segment_s": 4}}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    log = tmp_path / "daemon.log"
    sender = ffmpeg_udp(clip, udp, tmp_path / "ffmpeg.log").start()
    daemon = subprocess.Popen([sys.executable, str(REPO / "daemon" / "pystreamd.py"), "-c",
                               str(tmp_path / "config.yaml")], env=env, stdout=open(log, "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{http}"

    def state():
        return browser.execute_script(
            "const r = document.querySelector('#sources-table tr[data-source=cam1]');"
            "return r ? r.dataset.state : null")

    try:
        deadline = time.monotonic() + 90
        while True:
            assert daemon.poll() is None, log.read_text()[-3000:]
            try:
                get_json(base + "/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        browser.get(base + "/sources")
        browser.execute_script("document.getElementById('timeline-span').value = '900'")
        wait(browser, lambda d: state() == "running", 60, "cam1 running")
        # Rows arrive: the stream is indexed (and recorded).
        wait(browser, lambda d: get_json(base + "/status")["sources"]["cam1"]["rows"] >= 2, 60,
             "rows from cam1")
        browser.save_screenshot(str(artifacts / "sources-running.png"))

        sender.stop()  # the camera goes away
        wait(browser, lambda d: state() in ("down", "connecting"), 30, "cam1 down")
        pill = browser.find_element("css selector", "tr[data-source=cam1] .pill").text
        assert pill in ("down", "reconnecting"), pill
        browser.save_screenshot(str(artifacts / "sources-down.png"))

        sender = ffmpeg_udp(clip, udp, tmp_path / "ffmpeg.log").start()  # and comes back
        wait(browser, lambda d: state() == "running", 60, "cam1 running again")
        wait(browser, lambda d: d.execute_script(
            "const t = document.querySelector('tr[data-source=cam1] .timeline');"
            "return t && t.querySelectorAll('.gap:not(.open)').length >= 1"), 30, "the gap on the timeline")
        browser.save_screenshot(str(artifacts / "sources-back.png"))

        # A live hit plays from the recording.
        wait(browser, lambda d: get_json(base + "/recordings")["sources"]["cam1"]["segments"] >= 2,
             30, "recorded segments")
        hits = get_json(base + "/search?" + urllib.parse.urlencode({"q": "a circle", "k": 5}))["hits"]
        assert hits
        hit = hits[0]
        info = get_json(base + "/play/" + urllib.parse.quote(hit["id"]))
        assert info["mode"] == "recording", info
        browser.get(base + "/?" + urllib.parse.urlencode({"q": "a circle", "k": 5, "collapse": "0",
                                                           "play": hit["id"]}))
        results(browser)
        wait(browser, lambda d: d.execute_script(
            "const v = document.getElementById('video'); return v.readyState >= 2 && v.currentTime > 0"),
            40, "the recording to play")
        t = browser.execute_script("return document.getElementById('video').currentTime")
        assert info["offset"] - 0.5 <= t <= info["offset"] + 3, (t, info)
        browser.save_screenshot(str(artifacts / "live-hit.png"))
    finally:
        sender.stop()
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    assert daemon.returncode == 0, log.read_text()[-3000:]
