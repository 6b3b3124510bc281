"""configs: the shared loading and validation every config model goes through."""

from __future__ import annotations

import json
import re

import pytest

from recnas.embedding.config import EmbedSearchConfig
from recnas.errors import ConfigError
from recnas.train import TrainConfig


@pytest.mark.parametrize(
    "model,text,key,value",
    [
        (TrainConfig, "lr: .inf\n", "lr", "inf"),  # passes lr's gt=0 bound
        (TrainConfig, "lr: 1e400\n", "lr", "inf"),  # overflows to inf
        (TrainConfig, "grad_clip: .inf\n", "grad_clip", "inf"),
        (TrainConfig, "lr: inf\n", "lr", "inf"),  # a YAML string, which pydantic reads as a float
        (EmbedSearchConfig, "supernet:\n  lr: .inf\n", "supernet.lr", "inf"),
        (EmbedSearchConfig, "retrain:\n  embedding_lr: .inf\n", "retrain.embedding_lr", "inf"),
    ],
)
def test_non_finite_numbers_are_refused_for_every_config(tmp_path, model, text, key, value):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"cfg.yaml: key '{key}': must be a finite number \(got {value}\)"):
        model.from_yaml(path)


def test_non_finite_override_is_refused():
    with pytest.raises(ConfigError, match=r"overrides: key 'lr': must be a finite number"):
        TrainConfig().with_overrides(lr=float("inf"))


def test_unknown_key_inside_a_list_item_lists_the_item_keys(tmp_path):
    from recnas.space import Architecture

    path = tmp_path / "arch.json"
    block = '{"dense_ops": ["fc"], "sparse_ops": ["dot"], "dense_inputs": [0], "sparse_inputs": [0], "dense_dim": 8, "sparse_dim": 4'
    path.write_text('{"blocks": [' + block + "}, " + block + ', "zz": 1}]}')
    with pytest.raises(ConfigError, match=r"unknown key 'blocks.1.zz'; valid keys: dense_ops, sparse_ops, dense_inputs"):
        Architecture.load(path)


def test_unknown_keys_of_one_mapping_are_one_clause(tmp_path):
    """A file of another kind (a training config given where a search config goes) has many
    unknown keys: the valid keys are listed once, and only the first few unknown ones named."""
    from recnas.search.job import load_job_config

    path = tmp_path / "cfg.yaml"
    path.write_text("".join(f"k{i}: 1\n" for i in range(8)) + "evolution: {zz: 1, yy: 2}\n")
    with pytest.raises(ConfigError) as err:
        load_job_config("smoke", path)
    message = str(err.value)
    assert "unknown keys 'k0', 'k1', 'k2', 'k3', 'k4' and 3 more; valid keys: data, synthetic_rows" in message
    assert "unknown keys 'evolution.zz', 'evolution.yy'; valid keys: population" in message
    assert message.count("valid keys") == 2 and len(message) < 1000


def test_atomic_write_errors_name_the_target_not_the_temp_file(tmp_path):
    from recnas.configs import write_text_atomic

    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    with pytest.raises(IsADirectoryError) as err:
        write_text_atomic(folder, "x")
    assert err.value.filename == str(folder) and (folder / "meta.json").read_text() == "{}"
    with pytest.raises(FileNotFoundError) as err:
        write_text_atomic(tmp_path / "nodir" / "x.json", "x")
    assert err.value.filename == str(tmp_path / "nodir" / "x.json")
    with pytest.raises(NotADirectoryError) as err:  # below a regular file: `embed apply --out FILE/x.json`
        write_text_atomic(folder / "meta.json" / "x.json", "x")
    assert err.value.filename == str(folder / "meta.json" / "x.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temp file left behind


def test_a_key_given_twice_in_user_json_is_an_error(tmp_path):
    from recnas.configs import parse_json
    from recnas.space import Architecture

    assert parse_json('{"a": {"b": 1}, "c": [1, 2]}', "x") == {"a": {"b": 1}, "c": [1, 2]}
    with pytest.raises(ConfigError, match=r"--hparams: key 'mlp' is given twice"):  # json.loads kept the last
        parse_json('{"mlp": [64], "dropout": 0.1, "mlp": [8]}', "--hparams")
    with pytest.raises(ConfigError, match=r"--hparams: invalid JSON \(Expecting"):
        parse_json("{oops", "--hparams")
    block = '{"dense_ops": ["fc"], "sparse_ops": ["dot"], "dense_inputs": [0], "sparse_inputs": [0], "dense_dim": 8, "dense_dim": 16, "sparse_dim": 4}'
    path = tmp_path / "arch.json"
    path.write_text('{"blocks": [' + block + "]}")
    with pytest.raises(ConfigError, match=r"arch.json: invalid architecture: key 'dense_dim' is given twice"):
        Architecture.load(path)


@pytest.mark.parametrize("text, key, shown", [
    ("epochs: yes\n", "epochs", "true"),  # YAML 1.1 reads yes as true: it used to train 1 epoch
    ("epochs: '6'\n", "epochs", '"6"'),
    ("lr: true\n", "lr", "true"),
])
def test_numbers_given_as_booleans_or_quoted_integers_are_refused(tmp_path, text, key, shown):
    from recnas.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"key '{key}': must be a number, not {re.escape(shown)}"):
        TrainConfig.from_yaml(path)


def test_a_coerced_number_is_named_when_a_model_check_refuses_the_config(tmp_path):
    """`max_steps: true` was read as 1, and the error was the model's own check on that 1
    ("warmup_steps (5) exceeds max_steps (1)"), also in a nested section of a job config."""
    from recnas.search.job import load_job_config
    from recnas.train import TrainConfig

    with pytest.raises(ConfigError, match=r"^config: key 'max_steps': must be a number, not true$"):
        TrainConfig.from_dict({"max_steps": True, "warmup_steps": 5})
    with pytest.raises(ConfigError, match=r"warmup_steps \(5\) exceeds max_steps \(3\)"):  # a real mistake is still the model's
        TrainConfig.from_dict({"max_steps": 3, "warmup_steps": 5})
    job = tmp_path / "job.yaml"
    job.write_text("supernet: {max_steps: true, warmup_steps: 5}\n")
    with pytest.raises(ConfigError, match=r"key 'supernet.max_steps': must be a number, not true$"):
        load_job_config("smoke", job)


def test_yaml_exponent_floats_still_load(tmp_path):
    """YAML 1.1 reads `1e-3` (no dot) as a string; pydantic's float parse of it stays allowed."""
    from recnas.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nepochs: 2\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == 1e-3 and cfg.epochs == 2


def test_job_config_and_architecture_files_refuse_coerced_numbers(tmp_path):
    from recnas.search.job import load_job_config
    from recnas.space import Architecture

    job = tmp_path / "job.yaml"
    job.write_text("evolution: {generations: true}\n")
    with pytest.raises(ConfigError, match=r"key 'evolution.generations': must be a number, not true"):
        load_job_config("smoke", job)
    arch = tmp_path / "arch.json"
    block = {"dense_ops": ["fc"], "sparse_ops": ["dot"], "dense_inputs": [True], "sparse_inputs": [0], "dense_dim": "16", "sparse_dim": 16}
    arch.write_text(json.dumps({"blocks": [block]}))
    with pytest.raises(ConfigError, match=r"invalid architecture: key 'blocks.0.dense_inputs.0': must be a number, not true; key 'blocks.0.dense_dim': must be a number, not \"16\""):
        Architecture.load(arch)


def test_a_job_option_refused_is_blamed_on_the_option_not_the_config_file(tmp_path):
    """`recnas search --config job.yaml --hardware zzz` said "job.yaml: key 'hardware': ...", a
    value the file does not hold; a file's own mistake is still the file's, and an option that
    mends it is taken."""
    from recnas.search.job import load_job_config

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("finalists: 1\nobjective: {kind: penalized, targets: {flops: 1000}}\n")
    bad.write_text("hardware: zzz\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(good))} with --hardware: key 'hardware': invalid value 'zzz'"):
        load_job_config("smoke", good, hardware="zzz")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(good))} with --seed, --objective: key 'objective': cost targets need kind: penalized"):
        load_job_config("smoke", good, seed=3, objective={"kind": "pareto"})
    with pytest.raises(ConfigError, match=r"^budget 'smoke' with --hardware: "):
        load_job_config("smoke", None, hardware="zzz")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(bad))}: key 'hardware'"):
        load_job_config("smoke", bad, seed=3)
    assert load_job_config("smoke", bad, hardware="pim").hardware == "pim"


def test_a_missing_required_key_is_named_without_the_whole_mapping(tmp_path):
    """pydantic's input for a missing key is the mapping that lacks it: a meta.json without
    `rows` printed its whole content (kilobytes of vocabulary and generator settings)."""
    from recnas.data.schema import DatasetMeta
    from recnas.errors import DataError
    from recnas.space import Architecture

    (tmp_path / "meta.json").write_text(json.dumps({"name": "x", "dense_names": [], "cat_names": ["a"], "vocab_sizes": [3], "source": {"notes": "n" * 5000}}))
    with pytest.raises(DataError) as err:
        DatasetMeta.load(tmp_path)
    assert str(err.value).endswith("unreadable dataset metadata: key 'rows': missing (it is required)"), str(err.value)
    path = tmp_path / "arch.json"
    path.write_text('{"blocks": [{"dense_ops": ["fc"], "sparse_ops": ["dot"], "dense_inputs": [0], "sparse_inputs": [0], "sparse_dim": 4}]}')
    with pytest.raises(ConfigError) as err:
        Architecture.load(path)
    assert str(err.value).endswith("key 'blocks.0.dense_dim': missing (it is required)") and "dense_ops" not in str(err.value), str(err.value)


def test_embed_search_retrain_section_is_merged_into_its_defaults(tmp_path):
    """docs/embedding.md gives `retrain: {epochs: 2, batch_size: 512}` as the section's default,
    and the other sections merge key by key; a `retrain:` naming only its lr trained 1 epoch
    (TrainConfig's default) instead of 2, silently."""
    path = tmp_path / "cfg.yaml"
    path.write_text("retrain:\n  lr: 0.003\n")
    retrain = EmbedSearchConfig.from_yaml(path).retrain
    assert (retrain.lr, retrain.epochs, retrain.batch_size) == (0.003, 2, 512)
    path.write_text("retrain:\n  epochs: 1\n  batch_size: 64\n")
    assert (EmbedSearchConfig.from_yaml(path).retrain.epochs, EmbedSearchConfig.from_yaml(path).retrain.batch_size) == (1, 64)
    assert EmbedSearchConfig.from_yaml(None).retrain == EmbedSearchConfig.from_dict({"retrain": {}}).retrain


def test_a_sections_own_check_is_not_followed_by_its_raw_input(tmp_path):
    """A section's model validator names what is wrong; the error then repeated the whole
    section as read, YAML's strings and all: "... got {'flops': -1000000.0} (got {'kind':
    'penalized', 'targets': {'flops': '-1.0e6'}, 'beta': 0.1})"."""
    from recnas.search.job import load_job_config

    cfg = tmp_path / "obj.yaml"
    cfg.write_text("objective: {kind: penalized, targets: {flops: -1.0e6}, beta: 0.1}\n")
    with pytest.raises(ConfigError) as info:
        load_job_config("smoke", cfg)
    message = str(info.value)
    assert "key 'objective': targets must be positive, got {'flops': -1000000.0}" in message
    assert "'-1.0e6'" not in message and message.count("got") == 1


def test_yaml_merge_keys_load_with_the_keys_beside_them_winning(tmp_path):
    """`<<: *base` was refused as "invalid YAML (could not determine a constructor for the tag
    'tag:yaml.org,2002:merge')": the check for keys given twice met the merge key first."""
    from recnas.search.job import load_job_config

    path = tmp_path / "job.yaml"
    path.write_text("supernet: &t\n  lr: 0.01\n  epochs: 1\nfinetune:\n  <<: *t\n  lr: 0.002\n")
    cfg = load_job_config("smoke", path)
    assert (cfg.supernet.lr, cfg.finetune.lr, cfg.finetune.epochs) == (0.01, 0.002, 1)
    path.write_text("supernet: &t {lr: 0.01}\nfinetune:\n  <<: *t\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"key 'epochs' is given twice"):  # still refused beside a merge
        load_job_config("smoke", path)


@pytest.mark.parametrize(
    "text,shown",
    [
        ("epochs: 010\n", "010 is read by YAML as the octal number 8"),
        ("epochs: -010\n", "-010 is read by YAML as the octal number -8"),
        ("epochs: 1:30\n", "1:30 is read by YAML as a base-60 number"),
        ("lr: 1:30.5\n", "1:30.5 is read by YAML as a base-60 number"),
    ],
)
def test_yaml_11_octal_and_base_60_numbers_are_refused(tmp_path, text, shown):
    """YAML 1.1 read `epochs: 010` as 8 epochs and `epochs: 1:30` as 90, silently."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"c.yaml: line 1 invalid YAML \({re.escape(shown)}"):
        TrainConfig.from_yaml(path)


def test_numbers_yaml_reads_as_written_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("warmup_steps: 0\nmax_steps: 1_000\nlr: 0.5\nweight_decay: 0e0\nbatch_size: 0x10\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.warmup_steps, cfg.max_steps, cfg.lr, cfg.batch_size) == (0, 1000, 0.5, 16)


@pytest.mark.parametrize(
    "text,shown",
    [
        ("supernet:\n  off: 1\n", "key false in 'supernet' is no key name"),  # was "key 'supernet.0': Keys should be strings"
        ("on: 1\n", "key true is no key name"),  # was "key '1'"
        ("~: 1\n", "key null is no key name"),
        ("evolution:\n  2001-01-01: 1\n", "key 2001-01-01 in 'evolution' is no key name"),
    ],
)
def test_a_key_yaml_reads_as_no_string_is_named_as_written(tmp_path, text, shown):
    from recnas.search.job import load_job_config

    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"job.yaml: {re.escape(shown)} \(YAML reads a bare yes/no/on/off as true/false"):
        load_job_config("smoke", path)


def test_a_file_nested_too_deeply_is_one_error_not_a_recursion_traceback(tmp_path):
    from recnas.space.arch import Architecture

    path = tmp_path / "c.yaml"
    path.write_text("lr: " + "[" * 20000)
    with pytest.raises(ConfigError, match=r"c.yaml: invalid YAML \(nested too deeply\)"):
        TrainConfig.from_yaml(path)
    arch = tmp_path / "arch.json"
    arch.write_text("[" * 200000)
    with pytest.raises(ConfigError, match=r"arch.json: invalid architecture: invalid JSON \(nested too deeply\)"):
        Architecture.load(arch)


def test_a_value_yaml_or_json_cannot_make_is_one_error_not_a_traceback(tmp_path):
    """A number of 5000 digits (past what Python converts) or a date of month 13 raised the
    parser's ValueError: a traceback for a config, a feature spec, --hparams or an arch file."""
    from recnas import configs
    from recnas.space.arch import Architecture

    path = tmp_path / "c.yaml"
    for text, shown in [("epochs: " + "1" * 5000, "a number of 5000 digits, more than the 4300 that can be read"), ("epochs: 2024-13-45", "month must be in 1..12")]:
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=rf"c\.yaml: invalid YAML \({shown}\)$"):
            TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match=r"^--hparams: invalid JSON \(a number of 5000 digits, more than the 4300 that can be read\)$"):
        configs.parse_json('{"num_layers": ' + "1" * 5000 + "}", "--hparams")
    arch = tmp_path / "arch.json"
    arch.write_text('{"blocks": [' + "9" * 5000 + "]}")
    with pytest.raises(ConfigError, match=r"arch\.json: invalid architecture: invalid JSON \(a number of 5000 digits"):
        Architecture.load(arch)


def test_a_yaml_file_whose_aliases_multiply_its_values_is_refused_at_once(tmp_path):
    """A "billion laughs": each line ten aliases of the one before. The loader shares one
    object per anchor, but validation and the error naming the value walked every use: nine
    such lines made a 500 MB one-line error after 20 seconds (one more, ten times that). Refused
    as it is read, for every YAML file recnas reads (`read_yaml`), before anything walks it."""
    from recnas import configs

    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nepochs: *l6\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: invalid YAML \(its aliases repeat their anchors' values into 23,456,789 values, more than the 1,000,000 any config needs\)$"):
        configs.read_yaml(path)
    with pytest.raises(ConfigError, match=r"bomb\.yaml: invalid YAML \(its aliases repeat"):
        TrainConfig.from_yaml(path)
    path.write_text("\n".join(lines[:3]) + "\n")  # a few aliases are fine, as anchors and merge keys always were
    assert len(configs.read_yaml(path)["l2"][9][9]) == 10


def test_a_yaml_value_holding_itself_is_refused(tmp_path):
    """An alias inside its own anchor makes a value that holds itself: nothing can read it. A
    search job's `space_overrides` (a free mapping) of one ended in a RecursionError traceback."""
    from recnas import configs
    from recnas.search.job import load_job_config

    path = tmp_path / "loop.yaml"
    for text in ("epochs: &a [*a]\n", "lr: &a {b: *a}\n"):
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"loop\.yaml: invalid YAML \(a value holds itself: an alias inside its own anchor\)$"):
            configs.read_yaml(path)
    path.write_text("space_overrides: &a {n_blocks: 2, x: *a}\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: invalid YAML \(a value holds itself"):
        load_job_config("smoke", path)


def test_json_files_with_a_utf8_bom_load_as_yaml_ones_do(tmp_path):
    """An emb_dims.json or architecture saved by a Windows editor was "invalid JSON (Unexpected UTF-8 BOM ...)"."""
    from recnas.space.arch import load_emb_dims

    path = tmp_path / "emb_dims.json"
    path.write_bytes(b"\xef\xbb\xbf[4, 8]\n")
    assert load_emb_dims(path) == [4, 8]
    yml = tmp_path / "c.yaml"
    yml.write_bytes(b"\xef\xbb\xbfepochs: 2\n")
    assert TrainConfig.from_yaml(yml).epochs == 2


def test_atomic_write_fsyncs_the_file_then_its_folder_and_leaves_no_temp_on_error(tmp_path, monkeypatch):
    """atomic_write makes the data durable before the rename (fsync of the temp file) and the
    rename itself after it (fsync of the folder); an error in the block removes the temp file
    and keeps the previous file whole."""
    import os
    import stat

    import recnas.configs as configs

    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        synced.append(("dir" if stat.S_ISDIR(mode) else "file", (tmp_path / "a.txt").exists()))
        real_fsync(fd)

    monkeypatch.setattr(configs.os, "fsync", fsync)
    configs.write_text_atomic(tmp_path / "a.txt", "one")
    assert synced == [("file", False), ("dir", True)]  # the file before the rename, the folder after it
    with pytest.raises(RuntimeError, match="boom"):
        with configs.atomic_write(tmp_path / "a.txt") as fh:
            fh.write("two, half written")
            raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_small_helpers_word_their_messages_by_hand(tmp_path):
    """require_type's article, read_yaml's 1-based line number, a non-UTF-8 file's message, a
    BOM before JSON, and an empty YAML file as an empty mapping."""
    from recnas.configs import parse_json, read_text, read_yaml, require_type

    with pytest.raises(TypeError, match=r"^x must be an Unhealthy, got int$"):
        require_type(3, type("Unhealthy", (), {}), "x")
    with pytest.raises(TypeError, match=r"^x must be a dict or list, got int; make one$"):
        require_type(3, (dict, list), "x", "make one")
    (tmp_path / "bad.yaml").write_text("a: 1\nb: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 3 invalid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin.yaml: not a readable thing \(not UTF-8 text\)"):
        read_text(tmp_path / "bin.yaml", "thing")
    assert parse_json("\ufeff{\"a\": 1}", "x") == {"a": 1}
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}
    (tmp_path / "bin.yaml").write_text("a: 0b101\nb: 0x1F\nc: 012.5\n")
    assert read_yaml(tmp_path / "bin.yaml") == {"a": 5, "b": 31, "c": 12.5}  # YAML 1.1 binary, hex, a float's leading zero


def test_only_aliases_that_multiply_values_past_the_limit_are_refused(tmp_path, monkeypatch):
    """_alias_problem refuses a file whose aliases bring it past YAML_VALUES_MAX values, never one
    that simply writes that many (each scalar counted as written): with the limit at 10, twelve
    written values load and three aliases of a four-value anchor (13 values) are refused."""
    import recnas.configs as configs

    monkeypatch.setattr(configs, "YAML_VALUES_MAX", 10)
    (tmp_path / "long.yaml").write_text("a: [1, 2, 3, 4, 5, 6]\nb: [7, 8, 9, 10, 11, 12]\n")
    assert configs.read_yaml(tmp_path / "long.yaml")["b"][-1] == 12
    (tmp_path / "aliases.yaml").write_text("a: &x [1, 2, 3]\nb: *x\nc: *x\n")
    with pytest.raises(ConfigError, match=r"aliases.yaml: invalid YAML \(its aliases repeat their anchors' values into 13 values, more than the 10"):
        configs.read_yaml(tmp_path / "aliases.yaml")


def test_non_finite_values_are_found_inside_lists_with_their_index():
    """_non_finite walks mappings and lists: the key path of a NaN inside a list ends in its index."""
    from recnas.configs import _non_finite

    found = list(_non_finite({"a": [1.0, float("inf")], "b": {"c": (float("nan"),)}, "d": 2.0}))
    assert [loc for loc, _ in found] == [("a", 1), ("b", "c", 0)] and found[0][1] == float("inf")
