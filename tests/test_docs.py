"""A fresh clone holds what its docs and code cite, and refers to nothing outside itself."""

import re
import subprocess

import pytest
from conftest import REPO

# Tracked files whose text is product (code, configs, docs), not records of runs (those name the machine
# and folders they ran in, as they should). .ci/ describes the CI machine, where the data sits beside the clone.
RECORDS = re.compile(r"^results/(runs|quick/runs|quick/calibration|gpu/[^/]+/logs)/|\.json$|^\.ci/")
# Paths the docs cite that are made, not shipped: a loss the README shows how to add, a file-name template.
EXAMPLES = {"configs/loss/my_loss.yaml", "configs/regularization/my_loss.yaml", "configs/dataset_loss/cifar100_"}
CITED_PATH = re.compile(r"(?<![\w./-])((?:docs|scripts|configs|jal|tests|notebooks)/[\w./-]*[\w/])")


def product_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".ipynb", "Makefile")
    this = "tests/test_docs.py"  # its patterns are not citations
    return [f for f in listed.split() if f.endswith(suffixes) and not RECORDS.search(f) and f != this]


def test_every_path_the_code_and_docs_cite_is_in_the_repository():
    missing = {}
    for name in product_files():
        for path in CITED_PATH.findall((REPO / name).read_text(errors="replace")):
            if path not in EXAMPLES and not (REPO / path).exists():
                missing.setdefault(path, []).append(name)
    assert missing == {}


def test_citations_of_the_protocol_name_sections_it_has():
    sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "protocol.md").read_text(), re.M))
    assert sections == {"1", "2", "3", "4", "5", "6"}
    cited = {}
    for name in product_files():
        text = (REPO / name).read_text(errors="replace")
        for numbers in re.findall(r"docs/protocol\.md`? sections? (\d+(?: and \d+)*)", text):
            for number in numbers.split(" and "):
                cited.setdefault(number, []).append(name)
    assert cited  # the code does cite it
    assert {number: names for number, names in cited.items() if number not in sections} == {}


def test_nothing_refers_to_folders_outside_the_repository():
    outside = re.compile(r"\.\./shared|(?<![\w.])/(?:work|home|Users|scratch|mnt)/")
    hits = [f"{name}:{n}: {line.strip()}" for name in product_files()
            for n, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1)
            if outside.search(line)]
    assert hits == []
