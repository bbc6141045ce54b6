"""Every Python and shell example in README.md, daemon/README.md and the module docstrings is
run here, on a small archive built by the test, so the examples cannot rot.

What counts as an example:
- Markdown: fenced blocks tagged python, sh/bash/console, yaml (a yaml block whose first line
  is `# NAME` is written to NAME in the workspace: README's config.yaml);
- module docstrings (pystream/, daemon/): indented blocks that parse as Python, shell blocks
  whose lines start with a known command, and HTTP blocks (`GET /path`).
Each one runs in a workspace that looks like a user's directory: videos/ (two short dated
recordings), config/ (the repository's), config.yaml (README's), with `pystream`,
`pystreamd` and `python` on PATH (the same entry points setup.py installs). A few examples
cannot run inside a test (they install a system service, or are the test command itself):
they are listed in NOT_RUN_BLOCKS / NOT_RUN_LINES with the reason, and checked as far as a
test can. A new example is collected and run automatically; a stale NOT_RUN entry fails
test_every_example_is_accounted_for.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
DOCS = [REPO / "README.md", REPO / "daemon" / "README.md"]
SHELL_COMMANDS = {"pystream", "pystreamd", "python", "python3", "pip", "make", "sudo",
                  "journalctl", "systemctl", "curl"}
LONG_RUNNING = {("pystream", "watch"), ("pystream", "serve"), ("pystreamd", None)}
SLOW = {("python", "-m", "pystream.demo")}  # run to completion, but take minutes
# The recordings start on 2026-11-22 12:00 UTC: after README's since="2026-11-21T08:00" in
# every time zone.
RECORDED_AT = "2026-11-22T12:00:00.000000Z"


@dataclass(frozen=True)
class Example:
    file: str  # relative to the repository
    line: int
    lang: str  # python | sh | yaml | http
    code: str

    @property
    def key(self) -> str:
        first = next(ln for ln in self.code.splitlines() if ln.strip())
        return f"{self.file}: {first.strip()}"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


# Examples a test cannot run, with the reason and what is checked instead
# (test_not_run_examples_are_consistent): whole blocks ("FILE: first line") and single lines
# of shell blocks ("FILE: line").
NOT_RUN_BLOCKS = {
    "README.md: python3 -m venv venv && . venv/bin/activate":
        "creates a venv and installs torch, the lock and the package into it (minutes, network). "
        "tests/test_package.py builds the wheel, installs it into a throwaway venv and runs "
        "pystream index + search there; test_lock_* check the lock file.",
    "README.md: make demo    # venv + torch==2.13.0 + deps + C++ core, then index sample videos and a live":
        "builds the environment this test runs in; `make test` (.ci/run) runs this test. "
        "The demo itself runs below in its short form (pystream/demo.py).",
    "daemon/README.md: sudo useradd --system --home /var/lib/pystream --shell /usr/sbin/nologin pystream":
        "installs a system service (root, systemd). Checked: the files it copies exist, the "
        "unit's ExecStart is what `make build` installs, the default config it copies is valid.",
}
NOT_RUN_LINES = {
    "pystream/demo.py: python -m pystream.demo                   # what `make demo` runs (about 3 minutes)":
        "the same code path runs below with fewer and shorter videos (about 3 minutes here).",
    "pystream/synthetic/train.py: python -m pystream.synthetic.train --out pystream/assets/tiny-clip --seed 0":
        "retrains the shipped model in place (tens of minutes). Checked: the flags exist.",
}


# ----------------------------------------------------------------------------- collecting

def markdown_examples(path: Path) -> list[Example]:
    out = []
    text = path.read_text()
    for m in re.finditer(r"^```([A-Za-z]*)[^\n]*\n(.*?)^```", text, re.M | re.S):
        lang = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "console": "sh",
                "shell": "sh", "yaml": "yaml", "yml": "yaml"}.get(m.group(1).lower())
        if lang:
            line = text[: m.start()].count("\n") + 2
            out.append(Example(str(path.relative_to(REPO)), line, lang, m.group(2)))
    return out


def _indented_blocks(doc: str):
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            yield i, textwrap.dedent("\n".join(lines[i:j])).strip("\n") + "\n"
            i = j
        else:
            i += 1


def _classify(code: str) -> str | None:
    lines = [ln for ln in code.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines:
        return None
    if all(re.match(r"GET /", ln) for ln in lines):
        return "http"
    if all(ln.split()[0] in SHELL_COMMANDS for ln in lines if not ln.startswith(" ")):
        return "sh"
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    # Prose that happens to parse (a lone name, a tuple) is not an example: need a statement
    # that does something.
    if any(isinstance(n, (ast.Call, ast.Import, ast.ImportFrom)) for n in ast.walk(tree)):
        return "python"
    return None


def docstring_examples() -> list[Example]:
    out = []
    files = sorted(REPO.joinpath("pystream").rglob("*.py")) + sorted(REPO.joinpath("daemon").glob("*.py"))
    for path in files:
        source = path.read_text()
        tree = ast.parse(source)
        doc = ast.get_docstring(tree, clean=False)
        if not doc:
            continue
        doc_line = tree.body[0].lineno
        for offset, code in _indented_blocks(doc):
            lang = _classify(code)
            if lang:
                out.append(Example(str(path.relative_to(REPO)), doc_line + offset, lang, code))
    return out


def all_examples() -> list[Example]:
    return [e for doc in DOCS for e in markdown_examples(doc)] + docstring_examples()


EXAMPLES = all_examples()


def _examples(lang: str) -> list[Example]:
    return [e for e in EXAMPLES if e.lang == lang and e.key not in NOT_RUN_BLOCKS]


def _line_key(e: Example, line: str) -> str:
    return f"{e.file}: {line.strip()}"


# ----------------------------------------------------------------------------- the workspace

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dated_video(path: Path, seconds: int, seed: int, fps: int = 4, size: int = 96) -> None:
    """Moving coloured shapes, with the recording's start time in the container metadata."""
    import av

    rng = np.random.default_rng(seed)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        out.metadata["creation_time"] = RECORDED_AT
        st = out.add_stream(codec, rate=Fraction(fps))
        st.width = st.height = size
        st.pix_fmt = "yuv420p"
        st.codec_context.thread_count = 1
        colour = rng.integers(0, 255, 3)
        for i in range(seconds * fps):
            img = np.full((size, size, 3), 40, np.uint8)
            x = (i * 3) % (size - 24)
            img[30:54, x:x + 24] = colour
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A user's working directory with the tools on PATH."""
    root = tmp_path_factory.mktemp("examples")
    (root / "videos").mkdir()
    write_dated_video(root / "videos" / "a.mp4", 16, seed=1)
    write_dated_video(root / "videos" / "b.mp4", 13, seed=2)
    (root / "config").symlink_to(REPO / "config")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shims = {"pystream": f'exec "{PY}" -m pystream "$@"',
             "pystreamd": f'exec "{PY}" "{REPO}/daemon/pystreamd.py" "$@"',
             "python": f'exec "{PY}" "$@"', "python3": f'exec "{PY}" "$@"'}
    for name, body in shims.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYSTREAM_CONFIG", None)
    port = free_port()
    # Files named by yaml examples (README's config.yaml), the port made free for this run.
    for e in EXAMPLES:
        first = e.code.lstrip().splitlines()[0] if e.code.strip() else ""
        if e.lang == "yaml" and re.fullmatch(r"#\s*[\w.-]+\.ya?ml", first):
            data = yaml.safe_load(e.code)
            if isinstance(data, dict) and isinstance(data.get("http"), dict):
                data["http"]["port"] = port
                text = e.code.replace(f"port: {yaml.safe_load(e.code)['http']['port']}", f"port: {port}")
                assert yaml.safe_load(text) == data, "could not set the port in the yaml example"
            else:
                text = e.code
            (root / first.lstrip("#").strip()).write_text(text)
    # The archive the examples search, and a status in README's state_dir for `pystream
    # status` (the examples index too; for files already done that is a no-op).
    run = subprocess.run([PY, "-m", "pystream", "index", "videos", "--archive",
                          "pystream-data/archive", "--state-dir", "pystream-data/state",
                          "--source", "recordings", "-q"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return {"root": root, "env": env, "port": port}


# ----------------------------------------------------------------------------- running

def _check(proc, what):
    out = (proc.stdout or "") + (proc.stderr or "")
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{out[-3000:]}"
    assert "Traceback" not in out, f"{what} printed a traceback:\n{out[-3000:]}"
    return out


def _http_get(port: int, path: str, timeout: float = 30):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.headers.get("content-type"), r.read()


def _status(ws) -> dict:
    path = ws["root"] / "pystream-data" / "state" / "status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


_new_videos = iter(range(100))


def _drop_video(ws) -> None:
    """A new recording appears in the watched folder (written elsewhere, then renamed in)."""
    n = next(_new_videos)
    tmp = ws["root"] / f"new_{n}.mp4"
    write_dated_video(tmp, 12, seed=10 + n)
    os.replace(tmp, ws["root"] / "videos" / f"new_{n}.mp4")


def _run_long(ws, line: str, what: str):
    """Start a foreground command, check that it works, stop it as a user would: exit 0.
    watch / pystreamd: a recording dropped into the watched folder gets indexed; the daemon
    also answers the HTTP examples of pystream/http.py. serve: search and status answer."""
    status_file = ws["root"] / "pystream-data" / "state" / "status.json"
    if status_file.exists() and what != "serve":
        status_file.unlink()  # the fresh one shows this process running
    proc = subprocess.Popen(["bash", "-c", f"exec {line}"], cwd=ws["root"], env=ws["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = ws["port"]

    def wait_for(cond, timeout, label):
        deadline = time.time() + timeout
        while True:
            assert proc.poll() is None, (f"{line!r} exited early ({proc.returncode}):\n"
                                         f"{proc.stdout.read()[-3000:]}")
            try:
                value = cond()
                if value:
                    return value
            except OSError:
                pass
            assert time.time() < deadline, f"{line!r}: timed out waiting for {label}"
            time.sleep(0.5)

    def recordings():
        return (_status(ws).get("sources") or {}).get("recordings") or {}

    try:
        if what == "serve":
            wait_for(lambda: _http_get(port, "/search?q=a+red+circle&k=2", 5)[0] == 200, 240,
                     "the HTTP API")
            assert json.loads(_http_get(port, "/status")[2])["sources"]["recordings"]
        else:
            wait_for(lambda: _status(ws).get("running") and recordings(), 240, "the indexer")
            before = recordings().get("files_done", 0)
            _drop_video(ws)
            wait_for(lambda: recordings().get("files_done", 0) > before, 240, "the new recording")
            assert recordings().get("errors", 0) == 0, recordings()
            if what == "pystreamd":  # the service serves HTTP too
                run_http_examples(port)
        proc.send_signal(signal.SIGINT if what == "watch" else signal.SIGTERM)  # Ctrl-C / systemctl stop
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{line!r} exited {proc.returncode} after the stop:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]


def run_http_examples(port: int):
    """The GET lines of pystream/http.py's docstring, against a running server."""
    hit_id = None
    for e in EXAMPLES:
        if e.lang != "http":
            continue
        for line in e.code.splitlines():
            if not line.startswith("GET "):
                continue
            path = line.split()[1]
            if "{id}" in path:
                if hit_id is None:
                    hits = json.loads(_http_get(port, "/search?q=a+red+circle&k=1")[2])["hits"]
                    hit_id = hits[0]["id"]
                path = path.replace("{id}", urllib.request.quote(hit_id))
            status, ctype, body = _http_get(port, path, 60)
            assert status == 200, (e, line)
            if path.startswith("/search"):
                assert json.loads(body)["hits"], (e, line)  # the example finds something
            if path.startswith("/thumb/"):
                assert ctype == "image/jpeg" and body[:2] == b"\xff\xd8"


def _shell_lines(code: str) -> list[str]:
    out, cur = [], ""
    for ln in code.splitlines():
        if not ln.strip() or ln.strip().startswith("#"):
            continue
        cur += ln.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        out.append(cur.strip())
        cur = ""
    return out


def _words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def _long_running(words: list[str]) -> str | None:
    """"watch" / "serve" / "pystreamd" for commands that run until stopped, else None."""
    if (words[0], None) in LONG_RUNNING:
        return words[0]
    if len(words) > 1 and (words[0], words[1]) in LONG_RUNNING:
        return words[1]
    return None


def _slow(words: list[str]) -> bool:
    return _long_running(words) is not None or any(tuple(words[:len(s)]) == s for s in SLOW)


@pytest.mark.parametrize("example", _examples("python"), ids=str)
def test_python_example(ws, example):
    script = ws["root"] / f"example_{re.sub(r'[^A-Za-z0-9]+', '_', str(example))}.py"
    script.write_text(example.code)
    proc = subprocess.run([PY, str(script)], cwd=ws["root"], env=ws["env"], capture_output=True,
                          text=True, timeout=600)
    _check(proc, str(example))


@pytest.mark.parametrize("example", _examples("yaml"), ids=str)
def test_yaml_example_is_a_valid_config(ws, example):
    from pystream.config import load_config

    name = example.code.lstrip().splitlines()[0].lstrip("#").strip()
    cwd = os.getcwd()
    os.chdir(ws["root"])  # relative paths resolve against the user's directory
    try:
        cfg = load_config(name)
    finally:
        os.chdir(cwd)
    assert cfg.sources, "the example config should index something"


def _sh_examples(slow: bool):
    out = []
    for e in _examples("sh"):
        for line in _shell_lines(e.code):
            if _line_key(e, line) not in NOT_RUN_LINES and _slow(_words(line)) == slow:
                out.append(pytest.param(e, line, id=f"{e}: {line.split('#')[0].strip()}"))
    return out


def _run_shell(ws, example, line):
    proc = subprocess.run(["bash", "-c", line], cwd=ws["root"], env=ws["env"],
                          capture_output=True, text=True, timeout=900)
    out = _check(proc, f"{example}: {line}")
    words = _words(line)
    if words[:2] == ["pystream", "search"]:
        assert "no results" not in out and "recordings" in out
    if words[:2] == ["pystream", "status"]:
        assert "recordings" in out


@pytest.mark.parametrize("example,line", _sh_examples(slow=False))
def test_shell_example(ws, example, line):
    _run_shell(ws, example, line)


@pytest.mark.slow
@pytest.mark.parametrize("example,line", _sh_examples(slow=True))
def test_slow_shell_example(ws, example, line):
    what = _long_running(_words(line))
    if what is None:
        _run_shell(ws, example, line)
    else:
        _run_long(ws, line, what)


# ----------------------------------------------------------------------------- accounting

def test_every_example_is_accounted_for():
    keys = {e.key for e in EXAMPLES}
    for key in NOT_RUN_BLOCKS:
        assert key in keys, f"NOT_RUN_BLOCKS names an example that no longer exists: {key!r}"
    lines = {_line_key(e, ln) for e in EXAMPLES if e.lang == "sh" for ln in _shell_lines(e.code)}
    for key in NOT_RUN_LINES:
        assert key in lines, f"NOT_RUN_LINES names an example line that no longer exists: {key!r}"
    found = {e.lang for e in EXAMPLES}
    assert {"python", "sh", "yaml", "http"} <= found
    files = {e.file for e in EXAMPLES}
    assert {"README.md", "daemon/README.md", "pystream/__init__.py", "pystream/archive.py",
            "pystream/cli.py", "pystream/config.py"} <= files
    # Every example is run by one of the tests above or excused with a reason.
    for reason in [*NOT_RUN_BLOCKS.values(), *NOT_RUN_LINES.values()]:
        assert len(reason) > 40, "say why an example is not run, and what is checked instead"
    # The long-running ones need a ready check: only the commands _run_long knows.
    for e in _examples("sh"):
        for line in _shell_lines(e.code):
            words = _words(line)
            assert words[0] in SHELL_COMMANDS, (e, line)


def test_not_run_examples_are_consistent(ws):
    by_key = {e.key: e for e in EXAMPLES}
    # daemon/README.md install: what it copies exists, the unit runs what `make build` installs.
    install = by_key[next(k for k in NOT_RUN_BLOCKS if k.startswith("daemon/README.md: sudo useradd"))]
    for src in re.findall(r"sudo cp (\S+) ", install.code):
        assert (REPO / src).is_file(), src
    clone_dir = re.search(r"git clone \S+ (\S+)", install.code).group(1)
    assert "make build" in install.code
    unit = (REPO / "daemon" / "pystream.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    venv = re.search(r"^VENV\s*\?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert exec_start == f"{clone_dir}/{venv}/bin/pystreamd"
    packaging = "".join((REPO / f).read_text() for f in ("setup.py", "pyproject.toml")
                        if (REPO / f).exists())
    assert re.search(r"pystreamd['\"]?\s*=\s*['\"]?pystream\.cli:daemon_main", packaging)
    assert re.search(r"pystream['\"]?\s*=\s*['\"]?pystream\.cli:main", packaging)  # the shims
    from pystream.config import load_config

    load_config(REPO / "config" / "default.yaml")
    # synthetic/train.py: the documented flags exist.
    proc = subprocess.run([PY, "-m", "pystream.synthetic.train", "--help"], cwd=REPO,
                          env=ws["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "--out" in proc.stdout and "--seed" in proc.stdout
