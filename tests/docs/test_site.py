"""The documentation site: it builds strictly, its API reference documents every public name
under the path users import it from, and a real browser (Debian's Chromium, headless) renders
its pages. The browser's screenshots are kept in build/screenshots/ for a person to look at."""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

import llmtap
from tests.docs.conftest import ROOT, BuiltSite, skip_or_fail

#: The public submodules, each with a reference page of its own.
SUBMODULES = ("batch", "otel", "prometheus", "ray", "testing")

#: Where the browser's screenshots are kept after the run.
SCREENSHOTS = ROOT / "build" / "screenshots"

#: The longest one browser run may take.
BROWSER_TIMEOUT = 60.0

_ID = re.compile(r'\bid="([^"]+)"')
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def reference_ids(site: BuiltSite) -> dict[str, str]:
    """Every element id on the reference pages, each with the page it is on."""
    ids: dict[str, str] = {}
    for page in sorted((site.directory / "reference").rglob("*.html")):
        for element_id in _ID.findall(page.read_text(encoding="utf-8")):
            ids.setdefault(element_id, page.relative_to(site.directory).as_posix())
    return ids


def static_all(module: str) -> list[str]:
    """``llmtap.<module>.__all__``, read from the source (no optional extra is imported)."""
    package = ROOT / "src" / "llmtap"
    source = package / f"{module}.py"
    if not source.exists():
        source = package / module / "__init__.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{source} has no __all__")


def test_the_site_builds_strictly(site: BuiltSite) -> None:
    """mkdocs build --strict passed (the fixture checks its exit status) and warned of
    nothing: no broken link or anchor, no docstring griffe cannot read."""
    assert "WARNING" not in site.log, site.log
    assert (site.directory / "index.html").is_file()
    assert (site.directory / "reference" / "client" / "index.html").is_file()


def test_every_public_name_has_a_reference_entry(site: BuiltSite) -> None:
    """Each name in llmtap.__all__ has an entry under its public path (id="llmtap.Name"),
    __version__ is mentioned, and each public submodule has its page documenting every name
    in its own __all__."""
    ids = reference_ids(site)
    missing = [
        name for name in llmtap.__all__ if name != "__version__" and f"llmtap.{name}" not in ids
    ]
    assert not missing, f"no reference entry for {missing}"
    overview = (site.directory / "reference" / "index.html").read_text(encoding="utf-8")
    assert "__version__" in overview
    for module in SUBMODULES:
        page = site.directory / "reference" / module / "index.html"
        assert page.is_file(), f"no reference page for llmtap.{module}"
        assert ids.get(f"llmtap.{module}") == f"reference/{module}/index.html"
        undocumented = [name for name in static_all(module) if f"llmtap.{module}.{name}" not in ids]
        assert not undocumented, f"llmtap.{module}: no reference entry for {undocumented}"


def test_llmtap_client_page_lists_its_methods(site: BuiltSite) -> None:
    """The client page has an entry for every public method and property of LLMClient."""
    members = [name for name, _ in inspect.getmembers(llmtap.LLMClient) if name[0] != "_"]
    assert {"chat", "stream", "stream_chat", "preflight_check"} <= set(members)
    page = (site.directory / "reference" / "client" / "index.html").read_text(encoding="utf-8")
    ids = set(_ID.findall(page))
    missing = [name for name in members if f"llmtap.LLMClient.{name}" not in ids]
    assert not missing, f"the client page has no entry for LLMClient.{missing}"


def test_llmconfig_page_lists_its_fields(site: BuiltSite) -> None:
    """Every LLMConfig field has an entry (griffe-pydantic reads them from the class)."""
    page = (site.directory / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    ids = set(_ID.findall(page))
    missing = [
        name for name in llmtap.LLMConfig.model_fields if f"llmtap.LLMConfig.{name}" not in ids
    ]
    assert not missing, f"the config page has no entry for LLMConfig.{missing}"


def test_the_error_tree_is_the_class_hierarchy() -> None:
    """The tree drawn at the top of reference/errors.md puts each exception under its real
    base class (inspect.getmro), and names every exception llmtap exports, once."""
    text = (ROOT / "docs" / "reference" / "errors.md").read_text(encoding="utf-8")
    entry = re.compile(r"^(?P<indent> *)- \[?`(?P<name>\w+)`")
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = entry.match(line)
        if match is None:
            continue
        depth = len(match["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        name = match["name"]
        assert name not in parents, f"{name} is in the tree twice"
        parents[name] = stack[-1][1] if stack else ""
        stack.append((depth, name))
    exceptions = {
        name
        for name in llmtap.__all__
        if isinstance(member := getattr(llmtap, name), type) and issubclass(member, BaseException)
    }
    assert exceptions <= set(parents), f"not in the tree: {sorted(exceptions - set(parents))}"
    for name, parent in parents.items():
        cls = getattr(llmtap, name) if name in exceptions else getattr(builtins, name)
        assert issubclass(cls, BaseException), name
        if parent:
            assert parent == inspect.getmro(cls)[1].__name__, f"{name} is not a {parent}"
        else:
            assert cls is Exception, f"the tree's root is {name}, not Exception"


def chromium() -> str:
    """Debian's Chromium, or a skip (outside CI) or failure (in CI) when it is missing."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        skip_or_fail("the browser test needs Chromium: apt-get install chromium")
    return path


def run_browser(browser: str, profile: Path, *arguments: str) -> str:
    """Run headless Chromium once with a fresh profile; its standard output. It reaches no
    host but 127.0.0.1, and it is killed (with the processes it started) after a minute."""
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # the theme asks for web fonts and the repository's star count: every host name but
        # the site's own fails at once, so the page renders offline and nothing leaves
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        "--window-size=1280,1600",
        "--virtual-time-budget=3000",
        *arguments,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"Chromium took over {BROWSER_TIMEOUT:.0f} s: {command}", pytrace=False)
    assert process.returncode == 0, f"Chromium exited {process.returncode}:\n{err[-4000:]}"
    return out


def check_screenshot(png: Path) -> None:
    """A PNG of the window's size, large enough to hold a page rather than a blank."""
    data = png.read_bytes()
    assert data[:8] == _PNG_MAGIC, f"{png} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1280, 1600)
    assert len(data) > 10_000, f"{png} is {len(data)} bytes: a blank page?"


def test_the_site_in_a_real_browser(site_url: str, tmp_path: Path) -> None:
    """Chromium renders the home page and the LLMClient reference page: the DOM after the
    theme's scripts ran has their content, and the screenshots are real pages (kept as
    build/screenshots/home.png and llmtap-client.png)."""
    browser = chromium()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = {"home": site_url, "llmtap-client": f"{site_url}reference/client/"}
    doms: dict[str, str] = {}
    for name, url in pages.items():
        shot = tmp_path / f"{name}.png"
        run_browser(browser, tmp_path / f"profile-{name}-shot", f"--screenshot={shot}", url)
        assert shot.is_file(), f"Chromium wrote no screenshot of {url}"
        shutil.copyfile(shot, SCREENSHOTS / shot.name)  # kept even if a check below fails
        check_screenshot(shot)
        doms[name] = run_browser(browser, tmp_path / f"profile-{name}-dom", "--dump-dom", url)

    home = doms["home"]
    assert re.search(r"<title>[^<]*llmtap[^<]*</title>", home), home[:2000]
    assert 'class="md-header__topic"' in home
    assert 'class="md-content"' in home

    client = doms["llmtap-client"]
    assert 'id="llmtap.LLMClient"' in client
    for method in ("chat", "stream", "stream_chat", "preflight_check", "run_tools", "parse"):
        assert f'id="llmtap.LLMClient.{method}"' in client, method
    # the copy buttons on code blocks are added by the theme's JavaScript: it ran (the
    # buttons' class is md-clipboard in older Material releases, md-code__button in newer)
    assert re.search(r'class="[^"]*\b(md-clipboard|md-code__button)\b', client), client[-2000:]
