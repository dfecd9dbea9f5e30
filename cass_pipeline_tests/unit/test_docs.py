"""Every command, file and module that README.md and docs/ name exists, so the pages a
newcomer reads first never send them to something renamed or gone."""

import re
from pathlib import Path

import pytest

import cass_pipeline

ROOT = Path(cass_pipeline.__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Folders of the repository a path in the docs may start with.
REPO_FOLDERS = (
    "cass_pipeline/",
    "cass_pipeline_tests/",
    "benchmarks/",
    "docs/",
    "deploy/",
    "config/",
    ".ci/",
)
#: Where a shortened path (`imaging/cleanup.py`, `domain/options.py`) may be rooted.
SHORT_ROOTS = (ROOT, ROOT / "cass_pipeline", ROOT / "cass_pipeline" / "domain")
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?:^|[\s/])(cass|make) ([a-z][a-z-]*)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
MODULE = re.compile(r"\bcass_pipeline(?:\.\w+)+")


def named_paths(text: str) -> set[str]:
    """Repository paths a page names: in code spans (the first word, without a trailing
    `:line` or `(...)`) and as relative link targets."""
    found = set()
    for span in CODE.findall(text):
        word = span.split()[0].rstrip(".,;:)")
        word = re.sub(r"\(.*$", "", word)
        if word.startswith(REPO_FOLDERS) or (
            "/" in word and re.search(r"\.(py|yaml|yml|sh|md|toml)$", word) and "<" not in word
        ):
            found.add(word)
    for target in LINK.findall(text):
        if not target.startswith(("http://", "https://", "#", "mailto:")):
            found.add(target.split("#")[0])
    return found


def path_exists(word: str, page: Path) -> bool:
    word = word.rstrip("/")
    if any(ch in word for ch in "<*|{$"):  # a pattern (raw/mpr/<patient>, $DAGSTER_HOME/...)
        return True
    candidates = [page.parent / word, *(root / word for root in SHORT_ROOTS)]
    return any(c.exists() for c in candidates)


def module_exists(dotted: str) -> bool:
    """`cass_pipeline.a.b` names a module, or a module and a top-level name defined in it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else None
        if module is None and (base / "__init__.py").is_file():
            module = base / "__init__.py"
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        pattern = rf"^(?:def|class) {rest[0]}\b|^{rest[0]}\b.*=|^[A-Z_, ]*\b{rest[0]}\b[A-Z_, ]*="
        return re.search(pattern, module.read_text(), re.M) is not None
    return False


def named_commands(text: str) -> set[tuple[str, str]]:
    """`cass X` and `make X` in code spans and code blocks (prose may say "make of")."""
    code = "\n".join(FENCE.findall(text) + CODE.findall(FENCE.sub("", text)))
    return {(m.group(1), m.group(2)) for m in COMMAND.finditer(code)}


def cli_commands() -> set[str]:
    from cass_pipeline.cli import main

    return set(main.commands)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, re.M))


def test_the_rules_find_what_is_missing(tmp_path):
    page = tmp_path / "page.md"
    text = (
        "See `cass_pipeline/domain/gone.py`, `imaging/cleanup.py` and [deploy](deploy.md); "
        "run `cass nosuch` and `make run`; `cass_pipeline.domain.anatomy.NOPE`."
    )
    assert named_paths(text) == {
        "cass_pipeline/domain/gone.py",
        "imaging/cleanup.py",
        "deploy.md",
    }
    assert not path_exists("cass_pipeline/domain/gone.py", page)
    assert path_exists("imaging/cleanup.py", page)
    assert not module_exists("cass_pipeline.domain.anatomy.NOPE")
    assert module_exists("cass_pipeline.domain.anatomy.ARTERY_OF_BRANCH")
    assert module_exists("cass_pipeline.domain.imaging.cpr.curved_mpr_views")
    assert named_commands(text + " what it would make of it") == {
        ("cass", "nosuch"),
        ("make", "run"),
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_module_a_page_names_exists(page):
    text = page.read_text()
    missing = sorted(w for w in named_paths(text) if not path_exists(w, page))
    missing += sorted(m for m in set(MODULE.findall(text)) if not module_exists(m))
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_a_page_names_exists(page):
    known = {"cass": cli_commands(), "make": make_targets()}
    named = named_commands(page.read_text())
    missing = sorted(f"{tool} {word}" for tool, word in named if word not in known[tool])
    assert missing == []


def test_the_readme_is_an_entry_page():
    assert len((ROOT / "README.md").read_text().splitlines()) < 200
