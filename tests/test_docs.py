"""The documentation is tested like code (Ciw's doctests are the model): the site builds with
warnings as errors; every ```bash block and every ```python block in docs/ and README.md runs and
succeeds; no relative link leaves the repository or points at a file that does not exist.

Conventions (docs/contributing.md): ```bash and ```python blocks run; ```sh blocks are shown but
not run and sit under an HTML comment `<!-- not run: why -->`; README.md's Quickstart block is run
by .ci/run, not here. The blocks of one page run in order in one temporary folder (configs/,
simcost/ and experiments/ linked in), sharing one Python namespace, with `simcost` meaning this
tree.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def blocks(page: Path) -> list[tuple[str, str, int]]:
    """(language, code, line) of each fenced block; README's Quickstart block is left out."""
    text = page.read_text(encoding="utf-8")
    found = []
    quickstart = text.find("## Quickstart")
    for m in FENCE.finditer(text):
        if page.name == "README.md" and quickstart >= 0 and m.start() > quickstart and not any(
                f[0] == "quickstart" for f in found):
            found.append(("quickstart", m.group(2), text.count("\n", 0, m.start()) + 1))
            continue
        found.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    return [b for b in found if b[0] != "quickstart"]


def runnable_pages() -> list[Path]:
    return [p for p in PAGES if any(lang in ("bash", "python") for lang, _, _ in blocks(p))]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _workdir(tmp_path: Path) -> Path:
    for name in ("configs", "simcost", "experiments"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["MPLBACKEND"] = "Agg"
    return env


# `simcost` and `python` in a block mean this tree and this interpreter, whatever is installed
BASH_PRELUDE = f"""set -euo pipefail
simcost() {{ "{sys.executable}" -m simcost.cli "$@"; }}
python() {{ "{sys.executable}" "$@"; }}
"""


@pytest.mark.parametrize("page", runnable_pages(), ids=_id)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = _workdir(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for lang, code, line in blocks(page):
        where = f"{_id(page)}:{line}"
        if lang == "bash":
            done = subprocess.run(["bash", "-c", BASH_PRELUDE + code], cwd=work, env=_env(),
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        elif lang == "python":
            exec(compile(code, where, "exec"), namespace)


def test_examples_are_there() -> None:
    """The runner cannot pass by finding nothing: the tutorials' commands are among the blocks."""
    langs = [lang for page in PAGES for lang, _, _ in blocks(page)]
    assert langs.count("bash") >= 15 and langs.count("python") >= 4
    first_run = [code for lang, code, _ in blocks(DOCS / "tutorials" / "first-run.md") if lang == "bash"]
    assert any("simcost run configs/example.yaml" in code for code in first_run)


def test_commands_not_run_say_why() -> None:
    """A ```sh block (shown, not run) sits under a `<!-- not run: ... -->` comment."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^```sh\s*$", text, re.M):
            before = text[:m.start()].rstrip().splitlines()[-1] if text[:m.start()].strip() else ""
            assert before.startswith("<!-- not run:"), f"{_id(page)}: a ```sh block without <!-- not run: why -->"


def test_readme_quickstart_is_what_ci_runs() -> None:
    """.ci/run takes the second command line of the first ```bash block after ## Quickstart."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Quickstart"):].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0].startswith("pip install . && simcost run configs/example.yaml")
    assert "pytest" in commands[1]


def test_links_stay_inside_the_repository() -> None:
    """Every relative link (and image) resolves to a file in the repository; none points at
    ../shared or anywhere else a clone does not have."""
    problems = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if "../shared" in text or "/work/" in text:
            problems.append(f"{_id(page)}: names a path outside the repository")
        prose = FENCE.sub("", text)
        for m in LINK.finditer(prose):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"^[a-z]+:", target):  # an anchor, or http(s)/mailto
                continue
            resolved = (page.parent / target).resolve()
            if ROOT not in resolved.parents and resolved != ROOT:
                problems.append(f"{_id(page)}: {m.group(1)} leaves the repository")
            elif not resolved.exists() and not _generated(resolved):
                problems.append(f"{_id(page)}: {m.group(1)} does not exist")
    assert not problems, "\n".join(problems)


def _generated(path: Path) -> bool:
    """The reference pages docs/gen_reference.py writes at build time."""
    sys.path.insert(0, str(DOCS))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(DOCS))
    return path.is_relative_to(DOCS) and str(path.relative_to(DOCS)) in gen_reference.PAGE_PATHS


def test_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, a missing page or a bad docstring reference fails."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocs_gen_files"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install '.[test]' installs it)")
    env = _env() | {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("reference/scenario/index.html", "reference/cli/index.html", "reference/summary/index.html",
                 "reference/catalogs/index.html", "reference/api/index.html", "tutorials/first-run/index.html"):
        assert (site / page).is_file(), page


def test_generated_reference_covers_the_code() -> None:
    """The generated pages name every scenario section, every command and every summary key."""
    sys.path.insert(0, str(DOCS))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(DOCS))
    from simcost.cli.parser import build_parser
    from simcost.metrics.run_summary import RunSummary

    pages = gen_reference.pages()
    assert set(pages) == set(gen_reference.PAGE_PATHS)
    for key in RunSummary.__annotations__:
        assert f"`{key}`" in pages["reference/summary.md"], key
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for command in sub.choices:
        assert f"simcost {command}" in pages["reference/cli.md"], command
    for section in ("FleetConfig", "EngineConfig", "PoissonArrivals", "HpaAutoscaler", "PricingConfig"):
        assert f"## {section}" in pages["reference/scenario.md"], section
    for key in ("h100-sxm", "llama-3.1-8b", "p5.48xlarge"):
        assert f"`{key}`" in pages["reference/catalogs.md"], key
