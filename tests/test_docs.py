"""The README stays short, its generated tables agree with the code, and every relative link in it and in docs/ resolves
(scripts/docs_tables.py produces the tables)."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_generated_tables_and_description_agree_with_the_code():
    tables = docs_tables()
    assert tables.differences((ROOT / "README.md").read_text(), (ROOT / "setup.cfg").read_text()) == []
    from pitome_hf.families import FAMILIES

    readme = (ROOT / "README.md").read_text()
    assert all(f"| `{f.name}` |" in readme for f in FAMILIES) and f"{len(FAMILIES)} families" in tables.description()


def test_a_planted_mismatch_is_found():
    tables = docs_tables()
    readme, cfg = (ROOT / "README.md").read_text(), (ROOT / "setup.cfg").read_text()
    missing_family = re.sub(r"^\| `bert` \|.*\n", "", readme, flags=re.M)
    extra_command = readme.replace("| `pitome-hf push` |", "| `pitome-hf pull` | x |\n| `pitome-hf push` |")
    old_description = re.sub(r"^description = .*$", "description = PiToMe for ViT, CLIP, LLaVA", cfg, flags=re.M)
    assert any("families" in p for p in tables.differences(missing_family, cfg))
    assert any("commands" in p for p in tables.differences(extra_command, cfg))
    assert any("setup.cfg" in p for p in tables.differences(readme, old_description))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set:
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.*)$", page.read_text(), re.M)}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == [], f"{page.name}: links that do not resolve: {broken}"
