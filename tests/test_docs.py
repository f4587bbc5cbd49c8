"""A fresh clone holds what its docs and code cite, and refers to nothing outside itself."""

import re
import subprocess

import pytest
from conftest import REPO

# Tracked files whose text is product (code, configs, docs), not records of runs (those name the machine
# and folders they ran in, as they should). .ci/ describes the CI machine, where the data sits beside the clone.
RECORDS = re.compile(r"^results/(runs|quick/runs|quick/calibration|gpu/[^/]+/logs)/|\.json$|^\.ci/")
# Paths the docs cite that are made, not shipped: a loss the README shows how to add, a file-name template.
EXAMPLES = {"configs/loss/my_loss.yaml", "configs/dataset_loss/cifar100_"}
CITED_PATH = re.compile(r"(?<![\w./-])((?:docs|scripts|configs|jal|tests|notebooks)/[\w./-]*[\w/])")


def product_files() -> list[str]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".txt", ".ipynb", "Makefile")
    made_up = ("tests/test_docs.py", "tests/test_imports.py")  # their patterns and made-up modules are not citations
    return [f for f in listed.split() if f.endswith(suffixes) and not RECORDS.search(f) and f not in made_up]


def test_every_path_the_code_and_docs_cite_is_in_the_repository():
    missing, examples = {}, set()
    for name in product_files():
        for path in CITED_PATH.findall((REPO / name).read_text(errors="replace")):
            if path in EXAMPLES:
                examples.add(path)
            elif not (REPO / path).exists():
                missing.setdefault(path, []).append(name)
    assert missing == {}
    assert sorted(EXAMPLES - examples) == []  # an example no longer cited: drop it, lest it hide a missing file


# A citation of the protocol: "docs/protocol.md section 2", "`docs/protocol.md` sections 1 and 6",
# "[protocol.md](protocol.md) section 5", the number on the next line. What reads as one but not so is reported.
PROTOCOL_SECTIONS = re.compile(r"protocol\.md(?:`|\]\((?:docs/)?protocol\.md\))?\s+sections?\s+(\d+(?:\s+and\s+\d+)*)")
A_PROTOCOL_CITATION = re.compile(r"protocol\.md\S{0,30}\s+sections?\b")


def protocol_citations(text: str) -> tuple[list[str], list[str]]:
    """The section numbers a text cites of docs/protocol.md, and its citations worded so that none is read."""
    read = {m.start(): m for m in PROTOCOL_SECTIONS.finditer(text)}
    numbers = [n for m in read.values() for n in re.split(r"\s+and\s+", m.group(1))]
    unread = [m.group(0) for m in A_PROTOCOL_CITATION.finditer(text) if m.start() not in read]
    return numbers, unread


def test_protocol_citations_are_read_in_every_wording_the_docs_use():
    assert protocol_citations("as docs/protocol.md section 2.") == (["2"], [])
    assert protocol_citations("(`docs/protocol.md` sections 1 and 6)") == (["1", "6"], [])
    assert protocol_citations("see [protocol.md](protocol.md) section 5 and [x](docs/protocol.md) section 4") == (
        ["5"], ["protocol.md) section"])  # a link to it under another name is not a citation of it
    assert protocol_citations("[docs/protocol.md](docs/protocol.md) section 6") == (["6"], [])
    assert protocol_citations("a file (docs/protocol.md section\n    6), or None") == (["6"], [])
    assert protocol_citations("docs/protocol.md, section 3; protocol.md section three") == (
        [], ["protocol.md, section", "protocol.md section"])


def test_citations_of_the_protocol_name_sections_it_has():
    sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "protocol.md").read_text(), re.M))
    assert sections == {"1", "2", "3", "4", "5", "6", "7"}
    cited, unread = {}, []
    for name in product_files():
        numbers, unread_here = protocol_citations((REPO / name).read_text(errors="replace"))
        for number in numbers:
            cited.setdefault(number, []).append(name)
        unread += [f"{name}: {citation}" for citation in unread_here]
    assert unread == []  # worded so that its section cannot be checked: word it as the others are
    assert {number: names for number, names in cited.items() if number not in sections} == {}


def test_nothing_refers_to_folders_outside_the_repository():
    outside = re.compile(r"\.\./shared|(?<![\w.])/(?:work|home|Users|scratch|mnt)/")
    hits = [f"{name}:{n}: {line.strip()}" for name in product_files()
            for n, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1)
            if outside.search(line)]
    assert hits == []


# The documents a reader follows from the README: it, docs/, and the results' own READMEs.
def documents() -> list[str]:
    return ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
            *sorted(str(p.relative_to(REPO)) for p in (REPO / "results").glob("**/README.md")
                    if not RECORDS.search(str(p.relative_to(REPO))))]


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_in_the_documents_resolves_to_a_file():
    broken = []
    for name in documents():
        for target in LINK.findall((REPO / name).read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = (REPO / name).parent / target.split("#")[0]
            if not path.exists():
                broken.append(f"{name}: ({target})")
    assert broken == []


def test_the_readme_links_every_document():
    readme = (REPO / "README.md").read_text()
    linked = {(REPO / target).resolve() for target in LINK.findall(readme)}
    docs = {p.resolve() for p in (REPO / "docs").glob("*.md")}
    assert sorted(str(p.relative_to(REPO)) for p in docs - linked) == []


def commands(text: str) -> list[str]:
    """The shell commands of a document: lines of its bash blocks and inline `make ...` spans."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line] + re.findall(r"`(make [^`]+)`", text)


# Options of a config group that Hydra and its plugins (installed by pyproject's extras) bring, not configs/
HYDRAS_OWN = {"hydra/launcher": ("basic", "joblib", "submitit_local", "submitit_slurm")}


def test_every_command_in_the_documents_names_what_exists():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    # a VAR=value is read by the Makefile or a script, or is one of the libraries' own
    scripts = "".join(p.read_text() for p in (REPO / "scripts").glob("*.sh"))
    variables = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\b", makefile + scripts)) | {"WANDB_MODE", "OMP_NUM_THREADS"}
    wrong = []
    for name in documents():
        for command in commands((REPO / name).read_text()):
            words = command.split()
            for i, word in enumerate(words):
                if word == "make" and i + 1 < len(words) and not words[i + 1].isupper() and "=" not in words[i + 1]:
                    if words[i + 1] not in targets:
                        wrong.append(f"{name}: {command}: no Make target {words[i + 1]}")
                if word == "-m" and i + 1 < len(words) and words[i + 1].startswith("jal."):
                    module = REPO / "jal" / words[i + 1][4:].replace(".", "/")
                    if not (module.with_suffix(".py").exists() or (module / "__main__.py").exists()):
                        wrong.append(f"{name}: {command}: no module {words[i + 1]}")
                setting = re.fullmatch(r"([A-Z][A-Z_]*)=\S*", word)
                if setting and setting.group(1) not in variables:
                    wrong.append(f"{name}: {command}: no Make or script variable {setting.group(1)}")
                choice = re.fullmatch(r"([a-z_]+(?:/[a-z_]+)?)=([\w.,]+)", word)
                if choice and (REPO / "configs" / choice.group(1)).is_dir():
                    for option in choice.group(2).split(","):
                        if option in HYDRAS_OWN.get(choice.group(1), ()):
                            continue
                        if not (REPO / "configs" / choice.group(1) / f"{option}.yaml").exists():
                            wrong.append(f"{name}: {command}: no config {choice.group(1)}/{option}.yaml")
    assert wrong == []


def markdown_table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first table under `heading` (a line of the text), as lists of cells, header first."""
    assert heading + "\n" in text, f"no {heading!r}"
    section = text.split(heading + "\n", 1)[1]
    rows = []
    started = False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            if not set(line) <= set("|-: "):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif started:
            break
    return rows


def test_the_readme_headline_cells_are_the_committed_tables_and_the_published_figures():
    import csv

    with open(REPO / "results" / "published_results.csv") as f:
        published = {(r["loss"], r["noise_type"], float(r["noise_rate"])): r["mean"]
                     for r in csv.DictReader(f) if r["source"] == "jal2025_main" and r["dataset"] == "cifar10"}
    labels = {"CE": "ce", "NCE+RCE": "nce_rce", "ANL-CE": "anl_ce", "JAL-CE": "jal_ce"}
    ours = {}  # (table, loss label, column) -> our figure as the table prints it
    for table in ("cifar10", "quick"):
        header, *rows = markdown_table((REPO / "results" / table / "table.md").read_text(), "## CIFAR-10")
        for row in rows:
            for column, cell in zip(header[1:], row[1:]):
                ours[table, row[0], column] = cell.split(" (")[0].strip("*")
    header, *rows = markdown_table((REPO / "README.md").read_text(), "## Headline results")
    assert header == ["Cell", "Published", "Ours, paper protocol", "Ours, quick protocol"] and len(rows) == 5
    for cell, figure, paper, quick in rows:
        loss, noise = cell.split(", ")
        noise_type, rate = noise.split()
        column = ("Sym " if noise_type == "symmetric" else "Asym ") + rate
        assert figure == published[labels[loss], noise_type, float(rate)], cell
        assert paper == ours["cifar10", loss, column], cell
        assert quick == ours["quick", loss, column], cell


def test_a_committed_tables_rows_are_in_its_table_md_only():
    rows = {}  # a data row of a committed table -> the table
    for table in REPO.glob("results/**/table.md"):
        if RECORDS.search(str(table.relative_to(REPO))):
            continue
        for line in table.read_text().splitlines():
            if line.startswith("| ") and re.search(r"\d+\.\d\d", line):
                rows[line] = str(table.relative_to(REPO))
    copies = [f"{name}: {line[:60]} (from {rows[line]})" for name in documents()
              for line in (REPO / name).read_text().splitlines() if line in rows]
    assert copies == []


def test_the_readme_layout_names_every_module():
    layout = (REPO / "README.md").read_text().split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"(?:^|\s)(jal/\w+\.py)\b", layout, re.M))  # several a line, separated by spaces
    modules = {f"jal/{p.name}" for p in (REPO / "jal").glob("*.py") if p.name != "__init__.py"}
    assert sorted(modules - named) == [] and sorted(named - modules) == []


# ----------------------------------------------------------------------------- names cited resolve

# jal.<module>[.<name>...] and jal/<module>.py, as text cites them; names that are neither (resolvers, loggers)
# are told apart below, from what the code registers.
CITED_NAME = re.compile(r"(?<![\w.])jal\.(\w+(?:\.\w+)*)")
CITED_MODULE_FILE = re.compile(r"(?<![\w./-])jal/(\w+)\.py\b")


def cited_names(text: str) -> set[str]:
    """The jal.<module>[.<name>] and jal/<module>.py a text cites, each as a dotted name (jal/noise.py: jal.noise).
    A trailing dot ends a sentence, not the name; `jal.x.py` cites the file."""
    names = {m.group(0).removesuffix(".py") for m in CITED_NAME.finditer(text)}
    return names | {f"jal.{m}" for m in CITED_MODULE_FILE.findall(text)}


def test_cited_names_are_read_as_written():
    text = "see jal.losses.AMSE. and jal.theory.amse_min_a, `jal/noise.py` and python -m jal.train; not myjal.x"
    assert cited_names(text) == {"jal.losses.AMSE", "jal.theory.amse_min_a", "jal.noise", "jal.train"}
    assert cited_names("${jal.l1:${loss},${dataset}} (jal.losses.AMSE.per_sample)") == {
        "jal.l1", "jal.losses.AMSE.per_sample"}
    assert resolves("jal.losses.AMSE.per_sample") and resolves("jal.noise") and resolves("jal.__version__") == hasattr(
        __import__("jal"), "__version__")
    assert not resolves("jal.losses.AMSEE") and not resolves("jal.no_such_module") and not resolves("jal.noise.x.y")


def resolves(name: str) -> bool:
    """jal.<module> is importable and every name after it an attribute (jal.step.Learner.step)."""
    import importlib

    parts = name.split(".")
    for end in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            found = importlib.import_module(".".join(parts[:end]))
        except ModuleNotFoundError as missing:
            if missing.name != ".".join(parts[:end]) and not ".".join(parts[:end]).startswith(missing.name or "-"):
                raise  # the module exists and imports something missing: not a stale citation, a broken module
            continue
        for attribute in parts[end:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_jal_name_the_configs_docs_scripts_and_messages_cite_resolves():
    """Every jal.<module>.<name> (and jal.<module>, jal/<module>.py) in configs/, docs/, README.md, scripts/ and
    jal/ (its messages, docstrings and comments) is a module that imports and an attribute it has; the
    resolvers the configs call (${jal.l1:...}) and the loggers they route (jal.epochs) are what the code
    registers under those names."""
    from omegaconf import OmegaConf

    import jal.resolvers  # noqa: F401  (registers the configs' resolvers)

    loggers = {n for n in OmegaConf.load(REPO / "configs" / "train.yaml").hydra.job_logging.loggers if "jal." in n}
    scope = ("configs/", "docs/", "scripts/", "jal/", "README.md")
    stale = {}
    for name in product_files():
        if not name.startswith(scope):
            continue
        for cited in sorted(cited_names((REPO / name).read_text(errors="replace"))):
            if not (OmegaConf.has_resolver(cited) or cited in loggers or resolves(cited)):
                stale.setdefault(cited, []).append(name)
    assert stale == {}
    assert loggers and not any(resolves(name) for name in loggers)  # a channel's name is no module's


# ----------------------------------------------------------------------------- the README's first screen


def readme_first_screen() -> str:
    """The README up to its first section: what a reader sees before scrolling."""
    return (REPO / "README.md").read_text().split("\n## ", 1)[0]


def test_the_readme_first_screen_is_one_screen_with_the_commands():
    screen = readme_first_screen()
    assert len(screen.splitlines()) <= 40
    (block, *_) = re.findall(r"```bash\n(.*?)```", screen, re.S)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    assert lines[0] == "make install && source .venv/bin/activate"
    assert lines[1].startswith("python -m jal.train ")
    assert lines[2:] == ["make reproduce-cifar10", "make test"]
    for module in ("train", "step", "losses", "noise"):
        assert f"`jal/{module}.py`" in screen
    assert re.search(r"^\s+for epoch in ", (REPO / "jal" / "train.py").read_text(), re.M)  # the loop is there


def test_the_readme_formula_is_the_configured_jal_ce_and_computes_what_the_loss_does():
    """JAL-CE as the first screen writes it, with its CIFAR-10 values, is the loss config's (composed) and gives
    the loss's value: alpha * -log p_y / -sum_k log p_k + beta * (1/K) ||a e_y - p||^2 on random logits."""
    import torch
    from hydra.utils import instantiate

    from jal.util import compose_run

    screen = " ".join(readme_first_screen().split())
    assert "**JAL-CE = α·NCE + β·AMSE(a)**" in screen and "L1 penalty λ·Σ|θ| on every weight in place of L2" in screen
    assert "NCE = −log p_y / (−Σ_k log p_k)" in screen and "AMSE(a) = (1/K)·‖a·e_y − p‖²" in screen
    alpha, beta, a, l1 = map(float, re.search(r"CIFAR-10: α = (\S+), β = (\S+), a = (\S+), λ = ([^;\s]+);",
                                              screen).groups())
    cfg = compose_run(["loss=jal_ce", "dataset=cifar10"])
    assert (cfg.loss.active._target_, cfg.loss.passive._target_) == ("jal.losses.NCE", "jal.losses.AMSE")
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.passive.a) == (alpha, beta, a)
    assert (cfg.optim.l1, cfg.optim.weight_decay) == (l1, 0)
    loss = instantiate(cfg.loss)
    logits, labels = torch.randn(5, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), \
        torch.tensor([0, 3, 3, 9, 1])
    p = logits.softmax(dim=1)
    nce = -p.log()[range(5), labels] / -p.log().sum(dim=1)
    amse = (a * torch.nn.functional.one_hot(labels, 10) - p).square().sum(dim=1) / 10
    # float64 throughout: the two differ by rounding only (1e-12 against values of order 1 to 100)
    assert torch.allclose(loss(logits, labels), (alpha * nce + beta * amse).mean(), rtol=0, atol=1e-12)


def test_the_readme_run_and_its_closing_line_are_what_the_command_does():
    """The run the first screen shows: its description is its config's, and its closing line is the one
    jal.train prints (Hydra's log format, jal.record.ending's words, then the run directory the command composes)."""
    import numpy as np

    from jal.noise import make_noisy_labels
    from jal.record import Record, Status, ending
    from jal.util import compose_run

    screen = readme_first_screen()
    (command,) = [line for line in screen.splitlines() if line.startswith("python -m jal.train ")]
    overrides = command.split("  #")[0].split()[3:]
    cfg = compose_run(overrides)
    said = " ".join(screen.split())
    assert (f"for {cfg.trainer.epochs} epochs on {cfg.dataset.subset:,} CIFAR-10 images with "
            f"{cfg.noise.rate:.0%} of their labels flipped") in said and cfg.dataset.name == "cifar10"
    # the subset is class-balanced, and exact counts per class flip that share of it (on 2,000 images: 36%)
    clean = np.repeat(np.arange(cfg.dataset.num_classes), cfg.dataset.subset // cfg.dataset.num_classes)
    noisy = make_noisy_labels(clean, cfg.noise.type, cfg.noise.rate, cfg.dataset.num_classes, cfg.seed)
    assert len(clean) == cfg.dataset.subset and (noisy != clean).mean() == cfg.noise.rate
    (closing,) = [body.strip() for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", screen, re.S | re.M)
                  if not language]
    line = re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[jal\.console\]\[INFO\] - (.*) -> (\S+)", closing)
    assert line, closing
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", line[1])[1])
    assert line[1] == ending(Record(status=Status.FINISHED, last_test_acc=accuracy, epochs=cfg.trainer.epochs))
    assert line[2] == str(cfg.hydra.run.dir)


def planned_sweeps(script: str, tmp_path, **env: str) -> list[dict]:
    """The sweeps a table script plans, each as its overrides (name -> value, lists comma-separated), read from
    its jal.plan call as a stand-in python echoes it (and answers the script's device probe: no CUDA)."""
    import os

    python = tmp_path / "python"
    python.write_text('#!/bin/bash\ncase "$1 $2" in "-m jal.plan") echo "$@";; "-c "*) echo 0 4;; *) exit 9;; esac\n')
    python.chmod(0o755)
    kept = {k: v for k, v in os.environ.items() if k not in ("PRESET", "SEEDS", "LOSSES", "CELLS", "OUT", "FUSE")}
    done = subprocess.run(["bash", f"scripts/{script}"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**kept, "PYTHON": str(python), "LAUNCHER": "basic", "DRY_RUN": "1", **env})
    assert done.returncode == 0, done.stderr
    (plan,) = [line for line in done.stdout.splitlines() if line.startswith("-m jal.plan ")]
    return [dict(a.split("=", 1) for a in sweep.split() if "=" in a)
            for sweep in plan.replace("\\", "").split(" experiment=")[1:]]


def grid(sweeps: list[dict]) -> tuple[set, dict, int]:
    """The losses, the seeds per noise setting ((type, rate)) and the number of runs of planned sweeps."""
    losses, seeds, runs = set(), {}, 0
    for sweep in sweeps:
        rates = sweep.get("noise.rate", "0").split(",")
        losses |= set(sweep["loss"].split(","))
        for rate in rates:
            seeds.setdefault((sweep["noise"], float(rate)), set()).update(sweep["seed"].split(","))
        runs += len(sweep["loss"].split(",")) * len(rates) * len(sweep["seed"].split(","))
    return losses, seeds, runs


@pytest.mark.full  # bash scripts/reproduce_cifar10.sh
def test_the_readme_gives_each_protocols_grid_as_its_script_sweeps_it(tmp_path):
    """The CIFAR-10 table's losses, noise settings, seeds and runs in each protocol, counted from what
    scripts/reproduce_cifar10.sh plans, and the quick preset's subset and epochs from its config."""
    from omegaconf import OmegaConf

    text = " ".join((REPO / "README.md").read_text().split("\n## The tables\n", 1)[1].split("\n## ", 1)[0].split())
    paper_losses, paper_seeds, paper_runs = grid(planned_sweeps("reproduce_cifar10.sh", tmp_path, PRESET="paper"))
    (seeds,) = {len(s) for s in paper_seeds.values()}
    epochs = OmegaConf.load(REPO / "configs" / "dataset" / "cifar10.yaml").epochs
    assert (f"{len(paper_losses)} losses x {len(paper_seeds)} noise settings x {seeds} seeds = {paper_runs} runs "
            f"of the 8-layer CNN for {epochs} epochs") in text

    losses, quick_seeds, runs = grid(planned_sweeps("reproduce_cifar10.sh", tmp_path, PRESET="quick"))
    assert losses < paper_losses and set(quick_seeds) < set(paper_seeds)
    named = [("clean", [r for t, r in quick_seeds if t == "none"]),
             ("symmetric", sorted(r for t, r in quick_seeds if t == "symmetric")),
             ("asymmetric", sorted(r for t, r in quick_seeds if t == "asymmetric"))]
    settings = ", ".join(kind if kind == "clean" else f"{kind} " + " and ".join(f"{r:g}" for r in rates)
                         for kind, rates in named if rates)
    noisy = {len(s) for (kind, _), s in quick_seeds.items() if kind != "none"}
    clean = {len(s) for (kind, _), s in quick_seeds.items() if kind == "none"}
    (noisy,), (clean,) = noisy, clean
    quick = OmegaConf.load(REPO / "configs" / "experiment" / "quick.yaml")
    assert (f"{len(losses)} of the {len(paper_losses)} losses at {len(quick_seeds)} of the {len(paper_seeds)} noise "
            f"settings ({settings}) with {noisy} seeds (clean: {clean}), {runs} runs, each on a "
            f"{quick.dataset.subset:,}-image training subset for {quick.trainer.epochs} epochs") in text


# ----------------------------------------------------------------------------- docs/losses.md, as written


def losses_section(heading: str) -> str:
    return (REPO / "docs" / "losses.md").read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_library_example_is_a_twelve_line_loop_that_trains_jal_ce_with_l1_and_no_l2():
    """The example of docs/losses.md, exec'd as written on a tiny batch (float64, so that the L1 term's share of
    one step, lr * 5e-5 = 5e-7 per weight, stands far above rounding): its step is the step worked out here,
    with JAL-CE written out (1.0 NCE + 1.0 AMSE(a=30)), the L1 penalty 5e-5 sum |theta| added, the clip at norm 5,
    SGD at lr 0.01 whose first momentum step is the gradient, and no L2."""
    import copy

    import torch
    import torch.nn.functional as F

    (example,) = re.findall(r"```python\n(.*?)```", losses_section("The losses as a library"), re.S)
    assert len(example.splitlines()) <= 12
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(12, 10).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    images = torch.randn(8, 12, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (8,), generator=g, dtype=torch.int32)  # not int64: any integer dtype will do
    before = copy.deepcopy(model)
    namespace = {"model": model, "loader": [(images, labels)]}
    exec(compile(example, "docs/losses.md", "exec"), namespace)

    def one_step(l1: float, weight_decay: float) -> tuple[float, list]:
        m = copy.deepcopy(before)
        log_p = F.log_softmax(m(images), dim=1)
        y = labels.long()
        nce = log_p.gather(1, y[:, None])[:, 0] / log_p.sum(1)
        amse = ((30.0 * F.one_hot(y, 10) - log_p.exp()) ** 2).mean(1)
        loss = (nce + amse).mean() + l1 * sum(p.abs().sum() for p in m.parameters())
        loss.backward()
        grads = [p.grad for p in m.parameters()]
        scale = min(1.0, 5.0 / (torch.cat([g.flatten() for g in grads]).norm().item() + 1e-6))  # the clip
        return loss.item(), [p.detach() - 0.01 * (scale * p.grad + weight_decay * p.detach()) for p in m.parameters()]

    loss, expected = one_step(l1=5e-5, weight_decay=0.0)
    assert namespace["loss"].item() == pytest.approx(loss, rel=1e-12)
    trained = [p.detach() for p in model.parameters()]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(trained, expected))
    for other in (one_step(l1=0.0, weight_decay=0.0)[1], one_step(l1=5e-5, weight_decay=1e-4)[1]):  # no L1; L2
        assert max((a - b).abs().max().item() for a, b in zip(trained, other)) > 1e-8


def test_the_library_table_is_paper_values():
    from jal.losses import PAPER_VALUES

    header, *rows = markdown_table((REPO / "docs" / "losses.md").read_text(), "## The losses as a library")
    assert header == ["dataset", "K", "α", "β", "a", "L1 (`l1`)", "L2 (`weight_decay`)"]
    table = {row[0]: [float(cell) for cell in row[1:]] for row in rows}
    assert table == {name: [v.num_classes, v.alpha, v.beta, v.a, v.l1, v.weight_decay]
                     for name, v in PAPER_VALUES.items()}


def test_every_loss_class_and_its_arguments_are_in_the_library_table():
    """A row per class of jal.losses that the published tables train (read from their configs: a loss added by
    the recipe below may have a row or not) and per class of the library, JALCE and JALFL; each row headed by the
    class's signature as Python has it, and each argument explained."""
    import inspect

    from jal import losses, tables

    rows = {}
    for line in losses_section("The losses as a library").splitlines():
        if line.startswith("| `"):
            signature, _, arguments = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[signature.strip("`").split("(")[0]] = (signature.strip("`"), arguments)
    classes = {name: c for name, c in vars(losses).items()
               if isinstance(c, type) and issubclass(c, losses.Loss) and c is not losses.Loss}
    published = {name for loss in {r["loss"] for r in tables.load_published()}
                 for name in re.findall(r"_target_: jal\.losses\.(\w+)",
                                        (REPO / "configs" / "loss" / f"{loss}.yaml").read_text())}
    assert sorted((published | {"JALCE", "JALFL"}) - set(rows)) == [] and sorted(set(rows) - set(classes)) == []
    for name, cls in ((name, classes[name]) for name in rows):
        params = list(inspect.signature(cls).parameters.values())
        written = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
        assert rows[name][0] == f"{name}({written})"
        assert [p.name for p in params if p.name != "num_classes" and f"`{p.name}`" not in rows[name][1]] == [], name


def apply_the_add_a_loss_recipe(root) -> None:
    """docs/losses.md's "Add a loss" as a reader follows it: each block, its heading line included, into the file
    its heading names, where it says (at the end, a new file, before or after a line that starts as quoted)."""
    from test_configs import recipe_steps

    for path, where, line, block in recipe_steps():
        file = root / path
        if where == "a new file":
            assert not file.exists(), path
            file.write_text(block)
            continue
        text = file.read_text()
        if where == "at the end":
            file.write_text(text.rstrip("\n") + "\n\n\n" + block)
            continue
        lines = text.splitlines(keepends=True)
        found = [i for i, text in enumerate(lines) if text.startswith(line)]
        assert len(found) == 1, f"{path}: {len(found)} lines start with {line!r}"
        at = found[0] + 1 if where == "after" else found[0]
        lines[at:at] = [block if where == "after" else block + "\n\n"]
        file.write_text("".join(lines))


@pytest.mark.slow  # about 3 CPU minutes: the loss and config test files take most of it
def test_the_add_a_loss_recipe_as_written_trains_and_leaves_the_loss_and_config_tests_green(tmp_path):
    """The recipe applied, exactly as docs/losses.md writes it, to a copy of this checkout's tracked files: a run
    of loss=my_loss trains, and the loss and config test files (tests/test_losses.py, test_configs.py,
    test_published_losses.py) pass there, my_loss among the losses they test, as do the module-size and
    documents' tests (test_imports.py, test_docs.py) that the new class and files meet."""
    import json
    import os
    import shutil
    import sys
    import xml.etree.ElementTree as ET

    copy = tmp_path / "repo"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():  # tracked and still there (as this checkout has it, edits included)
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    apply_the_add_a_loss_recipe(copy)
    for git in (["init", "-q"], ["add", "-A"]):  # a checkout, as the reader's (the docs tests list its files)
        subprocess.run(["git", *git], cwd=copy, check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(copy), "WANDB_MODE": "disabled"}

    train = [sys.executable, "-m", "jal.train", "loss=my_loss", "dataset=synthetic", "logger=none",
             "trainer.epochs=1", "trainer.progress=false", f"out_root={tmp_path / 'runs'}"]
    done = subprocess.run(train, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = (tmp_path / "runs" / "synthetic" / "clean" / "my_loss").rglob("result.json")
    assert json.loads(record.read_text())["status"] == "finished"

    report = tmp_path / "report.xml"
    tests = ["tests/test_losses.py", "tests/test_configs.py", "tests/test_published_losses.py",
             "tests/test_imports.py", "tests/test_docs.py"]  # and the module sizes, the documents' checks
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           f"--junitxml={report}", *tests], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    mine = [case.get("name") for case in cases if "my_loss" in case.get("name")]
    assert len(mine) >= 10 and "test_my_loss_by_hand" in mine, mine
