"""The docs stay true to the code: command lines, the TrainConfig key table, embed defaults.

Read from the CLI and the config models themselves, so a renamed flag or key fails here
instead of leaving a README that tells users to type something that no longer exists.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

from recnas.cli import app
from recnas.embedding.config import EmbedSearchConfig
from recnas.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = typer.main.get_command(app)


def _fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of every ``` block."""
    return [(m.group(1), m.group(2).splitlines()) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def _block_commands(lines: list[str]) -> list[str]:
    """Logical `recnas ...` lines of a shell block: `\\`-continued or indented lines join the
    command above them, comments go, and `a && recnas b` yields `recnas b`."""
    logical: list[str] = []
    joining = False
    for line in lines:
        if logical and (joining or (line[:1].isspace() and logical[-1].startswith("recnas "))):
            logical[-1] += " " + line.strip()
        else:
            logical.append(line.strip())
        joining = logical[-1].endswith("\\")
        logical[-1] = logical[-1].removesuffix("\\")
    commands = []
    for line in logical:
        for part in re.sub(r"\s#.*$", "", line).split("&&"):
            if part.strip().startswith("recnas "):
                commands.append(" ".join(part.split()))
    return commands


def doc_commands(path: Path) -> list[str]:
    """Every `recnas ...` command line of a doc: in shell code blocks and in inline code."""
    text = path.read_text()
    commands = []
    for lang, lines in _fenced_blocks(text):
        if lang in ("", "bash", "sh", "shell", "console"):
            commands += _block_commands(lines)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`]+)`", prose)  # an inline span may wrap onto the next line
    commands += [" ".join(span.split()) for span in spans if span.startswith("recnas ")]
    return commands


def _options(cmd) -> dict:
    """Flag -> its parameter; every command also takes --help."""
    params = {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}
    return {"--help": None, **params} if cmd.add_help_option else params


def command_problems(line: str, root=CLI) -> list[str]:
    """What in `line` the CLI does not have: unknown subcommands and unknown flags. Usage
    notation (`[--x N]`, `(--a N | --b X)`, `{a,b}`) is read as the flags it names."""
    try:
        words = shlex.split(line)
    except ValueError:  # an unclosed quote in usage notation
        words = line.split()
    tokens = [t.strip("[]()") for t in words[1:]]
    tokens = [t for t in tokens if t and t not in ("|", "...")]
    cmd, path, problems, i, eager = root, "recnas", [], 0, False
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok.startswith("-"):
            name = tok.split("=", 1)[0]
            options = _options(cmd)
            param = options.get(name)
            eager = eager or name == "--help" or getattr(param, "is_eager", False)  # --help, --version: a whole command line
            if name not in options:
                problems.append(f"{path}: no option {name}")
            elif param is not None and "=" not in tok and not param.is_flag and not param.count:
                i += param.nargs  # its value(s)
        elif hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance)
            sub = cmd.commands.get(tok)
            if sub is None:
                problems.append(f"{path}: no subcommand {tok!r}")
                break
            cmd, path = sub, f"{path} {tok}"
    if hasattr(cmd, "commands") and not cmd.invoke_without_command and not eager:
        problems.append(f"{path}: a command group, not a command")
    return problems


ALL_COMMANDS = [(p.relative_to(ROOT).as_posix(), line) for p in DOCS for line in doc_commands(p)]


def test_docs_have_command_lines_to_check():
    """The extraction itself works: the README and the training doc have their commands."""
    files = {f for f, _ in ALL_COMMANDS}
    assert {"README.md", "docs/training.md", "docs/data.md", "docs/embedding.md"} <= files
    assert any(line.startswith("recnas subnet train") for f, line in ALL_COMMANDS if f == "docs/training.md")


@pytest.mark.parametrize("doc, line", ALL_COMMANDS)
def test_doc_command_lines_use_only_existing_subcommands_and_flags(doc, line):
    assert command_problems(line) == [], f"{doc}: {line}"


@pytest.mark.parametrize("line, problem", [
    ("recnas supernet train --data D --no-such-flag 3 --out O", "recnas supernet train: no option --no-such-flag"),
    ("recnas search --ray-adress H:P", "recnas search: no option --ray-adress"),
    ("recnas subnet fit --data D", "recnas subnet: no subcommand 'fit'"),
    ("recnas embed --data D", "recnas embed: a command group, not a command"),
    ("recnas --verbose", "recnas: no option --verbose"),
    ("recnas embed search --data DIR (--budget-params N | --budget-mbytes X)", "recnas embed search: no option --budget-mbytes"),
])
def test_a_doc_naming_what_the_cli_lacks_fails(tmp_path, line, problem):
    doc = tmp_path / "doc.md"
    doc.write_text(f"Run it:\n\n```\n{line}  # a comment --not-checked\n```\n")
    assert doc_commands(doc) == [line]
    assert problem in command_problems(line)


SYNOPSIS = re.compile(r"[\[\]{}()|]")  # usage notation: `[--rows N]`, `{a,b}`, `(--a N | --b X)`


def block_commands(path: Path) -> list[str]:
    """The `recnas ...` lines of a doc's shell blocks (not its inline spans, often fragments)."""
    return [line for lang, lines in _fenced_blocks(path.read_text()) if lang in ("", "bash", "sh", "shell", "console") for line in _block_commands(lines)]


def parse_problems(line: str, root=CLI) -> list[str]:
    """What the CLI's own parser refuses in `line`, as the command would say it: a value of the
    wrong type or outside its range or choices, a missing required option or argument."""
    words, cmd, name, parent = shlex.split(line)[1:], root, "recnas", None
    try:
        while True:
            ctx = cmd.make_context(name, list(words), parent=parent)
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args] if hasattr(cmd, "commands") else []
            if not rest:
                return []
            name, cmd, words = cmd.resolve_command(ctx, rest)
            parent = ctx
    except sys.modules[typer.BadParameter.__module__].UsageError as exc:  # of Typer's own click (recnas.cli does the same)
        return [" ".join(exc.format_message().split())]


EXAMPLES = [(p.relative_to(ROOT).as_posix(), line) for p in DOCS for line in block_commands(p) if not SYNOPSIS.search(line)]


def test_docs_have_example_commands_to_parse():
    assert len([line for doc, line in EXAMPLES if doc == "README.md"]) >= 20


@pytest.mark.parametrize("doc, line", EXAMPLES)
def test_doc_example_commands_parse(doc, line):
    """Every example command of the README's and docs' shell blocks (usage synopses aside)
    gets past the command line: types, ranges, choices, required options all as given."""
    assert parse_problems(line) == [], f"{doc}: {line}"


@pytest.mark.parametrize("line, problem", [
    ("recnas data synth --rows many --out d", "'--rows'"),
    ("recnas data prepare --dataset parquet --raw r --out o", "'--dataset'"),
    ("recnas baseline train --data d --config c --out o", "Missing argument 'name'"),
    ("recnas search show runs/x --top 0", "'--top'"),
])
def test_an_example_the_cli_would_refuse_fails(line, problem):
    assert problem in " ".join(parse_problems(line))


def synopsis_default_problems(line: str, root=CLI) -> list[str]:
    """`[--opt VALUE]` of a usage synopsis whose VALUE is not the option's default (one that has
    a default: an option without one takes a placeholder, e.g. `[--seed 2018]` of a default
    the code picks itself)."""
    cmd = root
    for word in line.split()[1:]:
        if word.startswith(("-", "[", "(", "{")) or not hasattr(cmd, "commands"):
            break
        cmd = cmd.commands[word]
    options = _options(cmd)
    problems = []
    for flag, value in re.findall(r"\[(--[\w-]+) ([^\]|\s]+)\]", line):
        param = options.get(flag)
        if value.isupper() or value.startswith("{"):  # a placeholder (N, S, K) or the choices
            continue
        if param is not None and param.default is not None and not param.is_flag and str(getattr(param.default, "value", param.default)) != value:
            problems.append(f"{flag} {value}: the default is {param.default}")
    return problems


SYNOPSES = [(p.relative_to(ROOT).as_posix(), line) for p in DOCS for line in block_commands(p) if SYNOPSIS.search(line)]


@pytest.mark.parametrize("doc, line", SYNOPSES)
def test_a_synopsis_shows_the_real_defaults(doc, line):
    assert synopsis_default_problems(line) == [], f"{doc}: {line}"


def test_a_synopsis_with_a_wrong_default_fails():
    assert synopsis_default_problems("recnas evaluate --ckpt M --data D [--split val] [--batch-size 4096] [--json-out F]") == ["--split val: the default is test"]


def test_continued_and_inline_command_lines_are_read(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("```\nrecnas data synth --out D \\\n    [--rows N]\nrecnas data prepare --raw R\n    [--seed 1]\n```\n"
                   "pip install x && recnas search\n\nSee `recnas search show RUN` and `recnas/search/job.py`.\n")
    assert doc_commands(doc) == ["recnas data synth --out D [--rows N]", "recnas data prepare --raw R [--seed 1]", "recnas search show RUN"]


# -- docs/training.md: the TrainConfig key table ---------------------------------------------

def _training_key_table() -> dict[str, str]:
    """key -> default column of the table under "## Config keys" (`a`, `b` rows give both)."""
    section = (ROOT / "docs" / "training.md").read_text().split("## Config keys", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0].startswith("`"):
            for key in re.findall(r"`(\w+)`", cells[0]):
                rows[key] = cells[1]
    return rows


def _doc_value(text: str):
    """A default as the table writes it: none, true/false, a number or a `name`."""
    text = text.strip("`")
    return yaml.safe_load({"none": "null"}.get(text, text))


def test_training_doc_lists_exactly_the_train_config_keys():
    table = _training_key_table()
    assert set(table) == set(TrainConfig.model_fields), (
        f"missing from docs/training.md: {sorted(set(TrainConfig.model_fields) - set(table))}; "
        f"not TrainConfig keys: {sorted(set(table) - set(TrainConfig.model_fields))}"
    )


def test_training_doc_defaults_are_the_train_config_defaults():
    table = _training_key_table()
    wrong = {k: (doc, TrainConfig.model_fields[k].default) for k, doc in table.items()
             if k in TrainConfig.model_fields and _doc_value(doc) != TrainConfig.model_fields[k].default}
    assert wrong == {}


# -- docs/embedding.md: the config example states the defaults -------------------------------

def _embedding_example() -> dict:
    text = (ROOT / "docs" / "embedding.md").read_text().split("## Config", 1)[1]
    return yaml.safe_load("\n".join(next(lines for lang, lines in _fenced_blocks(text) if lang == "yaml")))


def _differences(doc: dict, actual: dict, where: str = "") -> list[str]:
    """Keys of `doc` that `actual` lacks or holds another value for (lists and tuples alike)."""
    out = []
    for key, value in doc.items():
        if key not in actual:
            out.append(f"{where}{key}: not a config key")
        elif isinstance(value, dict) and isinstance(actual[key], dict):
            out += _differences(value, actual[key], f"{where}{key}.")
        elif (list(value) if isinstance(value, (list, tuple)) else value) != (list(actual[key]) if isinstance(actual[key], (list, tuple)) else actual[key]):
            out.append(f"{where}{key}: doc {value!r}, default {actual[key]!r}")
    return out


def test_embedding_doc_example_is_the_embed_search_defaults():
    example = _embedding_example()
    assert set(example) == set(EmbedSearchConfig.model_fields)  # every section shown
    assert _differences(example, EmbedSearchConfig().model_dump()) == []


def test_embedding_doc_sections_show_every_key_of_their_defaults():
    """retrain is `any TrainConfig key`, so only the others must be complete."""
    example, defaults = _embedding_example(), EmbedSearchConfig().model_dump()
    for section in ("model", "supernet", "search"):
        assert set(example[section]) == set(defaults[section]), section


def test_embedding_doc_usage_line_states_the_default_widths():
    usage = next(line for line in doc_commands(ROOT / "docs" / "embedding.md") if line.startswith("recnas embed search"))
    widths = re.search(r"\[--widths ([\d,]+)\]", usage).group(1)
    assert tuple(map(int, widths.split(","))) == EmbedSearchConfig().widths


def test_difference_check_catches_a_wrong_default():
    assert _differences({"search": {"iterations": 99}}, EmbedSearchConfig().model_dump()) == ["search.iterations: doc 99, default 150"]
    assert _differences({"search": {"iteratons": 150}}, EmbedSearchConfig().model_dump()) == ["search.iteratons: not a config key"]


# -- versions and job config examples --------------------------------------------------------

def _required_versions() -> dict[str, str]:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.fullmatch(r"([\w-]+)>=([\d.]+)", d).groups() for d in deps)


def doc_version_problems(text: str, required: dict[str, str]) -> list[str]:
    """`name >= version` claims about a dependency that pyproject.toml requires otherwise."""
    return [f"{name} >= {v} (pyproject.toml: >= {required[name]})" for name, v in re.findall(r"\b([\w-]+) >= ([\d.]+)", text)
            if name in required and v != required[name]]


def test_docs_name_the_dependency_versions_pyproject_requires():
    required = _required_versions()
    assert "polars" in required
    assert doc_version_problems("polars >= 1.32 and pyarrow >= 21", required) == [f"polars >= 1.32 (pyproject.toml: >= {required['polars']})"]
    assert [p for doc in DOCS for p in doc_version_problems(doc.read_text(), required)] == []


def test_search_doc_config_example_is_a_valid_job_config(tmp_path):
    from recnas.search.job import load_job_config

    text = (ROOT / "docs" / "search.md").read_text()
    examples = [lines for lang, lines in _fenced_blocks(text) if lang == "yaml"]
    assert examples
    for i, lines in enumerate(examples):
        path = tmp_path / f"example{i}.yaml"
        path.write_text("\n".join(lines))
        load_job_config("smoke", path)  # unknown keys and bad values raise ConfigError


def test_data_doc_spec_example_loads(tmp_path):
    from recnas.data.formats import load_spec

    text = (ROOT / "docs" / "data.md").read_text().split("**Generic spec**", 1)[1]
    spec = tmp_path / "spec.yaml"
    spec.write_text("\n".join(next(lines for lang, lines in _fenced_blocks(text) if lang == "yaml")))
    fmt = load_spec(spec)  # unknown keys and bad values raise DataError
    assert (fmt.name, fmt.label, fmt.dense, fmt.categorical) == ("shop", "click", ("price", "age"), ("user", "item", "city"))


def test_search_doc_states_which_config_keys_replace_the_presets_whole(tmp_path):
    """docs/search.md says how a --config file meets the preset: sections merged key by key,
    the REPLACED_WHOLE keys replaced whole (a user's `space_overrides` used to drop the `cpu`
    preset's 3 blocks and dims without the docs saying so)."""
    from recnas.search.job import REPLACED_WHOLE, load_job_config

    text = " ".join((ROOT / "docs" / "search.md").read_text().split())
    sentence = text.split("A section is merged key by key", 1)[1].split(". E.g.", 1)[0]
    assert set(re.findall(r"except `(\w+)` and `(\w+)`", sentence)[0]) == set(REPLACED_WHOLE)
    path = tmp_path / "job.yaml"
    path.write_text("space_overrides: {dense_ops: [fc, cross]}\nfinal: {epochs: 2}\n")
    cfg, preset = load_job_config("cpu", path), load_job_config("cpu")
    assert cfg.final.epochs == 2 and cfg.final.lr == preset.final.lr  # merged
    assert cfg.space_overrides == {"dense_ops": ["fc", "cross"]}  # replaced: as the doc says, back to 7 blocks of 16-1024
    from recnas.space import get_space

    space = get_space(cfg.space, **cfg.space_overrides)
    assert (space.n_blocks, min(space.dense_dims), max(space.dense_dims)) == (7, 16, 1024)


def test_search_doc_states_what_a_block_computes_and_where_it_departs_from_nasrec():
    """docs/search.md called `full` "NASRec's" without saying that its block computes several
    parts otherwise (gating gates its input by itself, EFC follows a linear token projection,
    the dot-product pairs all t tokens, another merger and logit). The forms stated are those
    tests/test_dense_ops.py and tests/test_sparse_ops.py check; the numbers come from the code."""
    from recnas.ops.dense import DENSE_OPERATORS
    from recnas.ops.sparse import SPARSE_OPERATORS
    from recnas.space import get_space

    text = " ".join((ROOT / "docs" / "search.md").read_text().split())
    section = text.split("**What a choice block computes**", 1)[1].split("How a block starts", 1)[0]
    forms = {
        "fc": "`fc` is `relu(W h + b)`",
        "gating": "`gating` is `h * sigmoid(W h + b)`",
        "sum": "`sum` is `h` itself",
        "cross": "`cross` is `h * (W h + b) + h`",
        "efc": "`efc` is `W z + b` along the token axis",
        "dot": "`dot` takes the pairwise inner products `<x_i, x_j>`, i > j, of the t+1 vectors `[u(h); z]`",
        "attention": "`attention` is one post-norm transformer layer over z (2 heads,",
    }
    assert set(forms) == set(DENSE_OPERATORS) | set(SPARSE_OPERATORS)
    assert [op for op, form in forms.items() if form not in section] == []
    full = get_space("full")
    t = full.max_sparse
    assert f"up to {(t + 1) * t // 2:,} products at t = {t}" in section
    assert f"(7 blocks, dense widths {min(full.dense_dims)}-{full.max_dense}, {min(full.sparse_dims)}-{t} tokens of width {full.emb_dim};" in text
    assert (full.n_blocks, get_space("small").dense_dims, get_space("small").sparse_dims) == (7, full.dense_dims, full.sparse_dims)
    for departure in ("gates the block's combined input by itself", "EFC is linear and follows the block's own linear token projection",
                      "round(sqrt(2d))", "8 new tokens", "uniformly from 1..min(i+1, 4)"):
        assert departure in section, departure


def test_training_doc_defines_farthest_greedy_with_the_samplers_defaults():
    import inspect

    from recnas.space.samplers import STRATEGIES, ArchSampler

    text = " ".join((ROOT / "docs" / "training.md").read_text().split())
    sentence = text.split("`--sampler` picks the path sampler", 1)[1].split("The default,", 1)[0]
    assert [s for s in STRATEGIES if not re.search(rf"\b{s}(,| \(not)", sentence)] == []
    defaults = inspect.signature(ArchSampler).parameters
    assert f"farthest-greedy (not NASRec's), {defaults['candidates'].default} single-op-any-conn draws" in sentence
    assert f"from its nearest among the {defaults['memory'].default} paths it sampled last" in sentence


# -- files the docs name ---------------------------------------------------------------------

RUN_OUTPUTS = {"results.md", "pareto.md"}  # written into a run folder by `recnas search`


def doc_file_problems(text: str) -> list[str]:
    """Markdown files a doc names that a reader cannot open: a bare `name.md` must be a file of
    the repository's root or docs/ (or one a search writes), a `dir/name.md` path must exist."""
    problems = []
    for m in re.finditer(r"(?<![\w<>./-])((?:[\w-]+/)*[\w-]+\.md)\b", text):
        name = m.group(1)
        found = (ROOT / name).is_file() if "/" in name else (name in RUN_OUTPUTS or (ROOT / name).is_file() or (ROOT / "docs" / name).is_file())
        if not found:
            problems.append(name)
    return problems


def test_docs_name_only_markdown_files_that_exist():
    """docs/hardware.md cited `design.md section 4` for its formulas and constants, a file the
    repository does not have."""
    assert doc_file_problems("see design.md section 4 and docs/nothing.md; `results.md`, docs/data.md") == ["design.md", "docs/nothing.md"]
    assert {doc.name: doc_file_problems(doc.read_text()) for doc in DOCS if doc_file_problems(doc.read_text())} == {}


def test_search_doc_gives_the_penalty_weight_default():
    """`beta` weighs every cost over its target; its default was nowhere in the docs."""
    from recnas.search.objective import Objective

    assert f"(`beta` {Objective.model_fields['beta'].default:g} unless set)" in (ROOT / "docs" / "search.md").read_text()
