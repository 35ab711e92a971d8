"""The house rules that keep the code navigable: the engine never spells a command-line flag (the
script maps setting names to its flags), no module grows past about 450 lines, and the training
settings are defined once, feeding the spec's defaults, the trainer and the command line."""
import dataclasses
import io
import re
import tokenize

import pytest

import engine
from engine.training import Config, settings

from conftest import ROOT, SPEC

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
MAX_LINES = 450


def strings(path):
    """Every string literal of a Python file (docstrings and f-string parts included)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    kinds = {tokenize.STRING} | {getattr(tokenize, n) for n in ("FSTRING_MIDDLE",) if hasattr(tokenize, n)}
    return [t.string for t in tokens if t.type in kinds]


@pytest.mark.parametrize("path", sorted((ROOT / "engine").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_string_in_the_engine_names_a_command_line_flag(path):
    assert [s for s in strings(path) if FLAG.search(s)] == []


@pytest.mark.parametrize("path", sorted(p for d in ("notation", "engine", "scripts") for p in (ROOT / d).rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_longer_than_450_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_spec_defaults_are_the_settings_table():
    assert engine.read(SPEC).training.keys() == settings.SPEC_DEFAULTS.keys()


def test_the_config_holds_exactly_the_settings_that_decide_a_run():
    decides = {s.name for s in settings.SETTINGS if s.in_config}
    assert {f.name for f in dataclasses.fields(Config)} == decides | {"network"}


def test_every_setting_a_run_takes_has_a_flag_in_train_py():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    flags = {a for action in cli.parser()._actions for a in action.option_strings}
    wanted = {s.name for s in settings.SETTINGS if s.name != "dtype"}  # dtype: the spec's alone
    assert {cli.FLAGS[name] for name in wanted} <= flags
    assert cli.flags("give `data_dir` or `batch_size`, not `dx`") == "give --data-dir or --batch-size, not `dx`"


def imports(path) -> set:
    """The project modules a file imports, at its top or inside a function, as dotted names."""
    import ast as pyast
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in pyast.walk(pyast.parse(path.read_text())):
        if isinstance(node, pyast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, pyast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{module}.{a.name}" for a in node.names} if node.module is None else {module}
    return {m for m in found if m.split(".")[0] in ("notation", "engine")}


def modules(folder):
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / folder).rglob("*.py")}


@pytest.mark.parametrize("folder,never", [("notation", "engine"), ("engine/compiler", "engine.training"),
                                          ("engine/compiler", "engine.data"), ("engine/data", "engine.compiler"),
                                          ("engine/data", "engine.training"), ("engine/compiler", "engine.export"),
                                          ("engine/training", "engine.export"), ("engine/data", "engine.export")])
def test_the_layers_import_only_downwards(folder, never):
    """notation knows no engine; the compiler knows no training and no data; data knows no network; nothing
    below the export knows it."""
    wrong = {name: sorted(m for m in imports(p) if m == never or m.startswith(never + "."))
             for name, p in modules(folder).items()}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_no_two_modules_of_the_notation_import_each_other():
    graph = {name: {m for m in imports(p) if m in modules("notation")} - {name}
             for name, p in modules("notation").items()}
    assert sorted((a, b) for a in graph for b in graph[a] if a in graph.get(b, ()) and a < b) == []


def test_no_file_keeps_a_merge_conflict_marker():
    texts = [p for p in ROOT.rglob("*") if p.suffix in (".py", ".md", ".yaml", ".toml", ".c", ".sh")
             and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    marked = [str(p.relative_to(ROOT)) for p in texts
              if re.search(r"^(<{7} |>{7} |={7}$)", p.read_text(errors="replace"), re.MULTILINE)]
    assert marked == []
