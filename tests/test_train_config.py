"""TrainConfig: strict YAML loading with messages that name the key, file and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from recnas.errors import ConfigError
from recnas.train import TrainConfig, merge_overrides

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_loads_and_defaults(tmp_path):
    cfg = TrainConfig.from_yaml(write(tmp_path, "lr: 0.01\noptimizer: adagrad\nmax_steps: 10\n"))
    assert (cfg.lr, cfg.optimizer, cfg.max_steps, cfg.batch_size) == (0.01, "adagrad", 10, 512)
    assert TrainConfig.from_yaml(write(tmp_path, "")) == TrainConfig()  # empty file = defaults
    assert TrainConfig.from_yaml(write(tmp_path, "amp: off\n")).amp == "off"  # YAML's bare off is False


def test_yaml_bare_on_for_amp_names_the_precisions_not_true(tmp_path):
    """YAML reads `amp: on` as True: the error said "invalid value True", naming no precision."""
    with pytest.raises(ConfigError, match=r"amp.*on/true is no precision \(YAML reads a bare `on` as true\): give bf16 or fp16"):
        TrainConfig.from_yaml(write(tmp_path, "amp: on\n"))


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    path = write(tmp_path, "learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "'learning_rate'" in msg and "valid keys:" in msg and "lr" in msg and "grad_clip" in msg


@pytest.mark.parametrize(
    "text,expected",
    [
        ("optimizer: sgd\n", r"key 'optimizer': invalid value 'sgd'; allowed: adam, adagrad"),
        ("amp: fp8\n", r"key 'amp'.*allowed: auto, off, bf16, fp16"),
        ("lr_schedule: step\n", r"key 'lr_schedule'.*allowed: constant, cosine, linear"),
        ("device: tpu\n", r"key 'device'.*allowed: auto, cpu, cuda"),
        ("lr: -1\n", r"key 'lr': .*greater than 0"),
        ("batch_size: lots\n", r"key 'batch_size': .*integer"),
        ("max_steps: 5\nwarmup_steps: 9\n", r"warmup_steps \(9\) exceeds max_steps \(5\)"),
        ("eval_every: 0\nearly_stopping_patience: 3\n", r"early_stopping_patience counts evaluations, but eval_every is 0"),  # silently never stopped
        ("- lr\n", r"expected a mapping"),
        ("seed: -1\n", r"key 'seed': .*greater than or equal to 0"),
        ("lr: 0.1\nepochs: 2\nlr: 0.2\n", r"line 3 invalid YAML \(key 'lr' is given twice\)"),  # PyYAML keeps the last
        ("seed: 1180591620717411303424\n", r"key 'seed': .*less than or equal to 4294967295"),  # 2**70: numpy's RNG refused it
    ],
)
def test_bad_values_name_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=str(path) + ": .*" + expected):
        TrainConfig.from_yaml(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml: line 2 invalid YAML"):
        TrainConfig.from_yaml(write(tmp_path, "lr: 0.1\nbad: x: y\n"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"invalid YAML \(unacceptable character #x0000.*position 5\)") as err:
        TrainConfig.from_yaml(write(tmp_path, "lr: 1\x00\n"))
    assert "\n" not in str(err.value)  # PyYAML's message spans two lines
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe lr: 1\n\x00\xb7")
    with pytest.raises(ConfigError, match=r"binary.yaml: not a readable config file \(not UTF-8 text\)"):
        TrainConfig.from_yaml(binary)


def test_overrides_apply_and_are_validated():
    cfg = TrainConfig(lr=0.1)
    new = merge_overrides(cfg, max_steps=7, seed=3, batch_size=None)
    assert (new.max_steps, new.seed, new.batch_size, new.lr) == (7, 3, 512, 0.1) and cfg.max_steps is None
    assert merge_overrides(cfg) is cfg
    with pytest.raises(ConfigError, match="overrides: key 'max_steps'"):
        merge_overrides(cfg, max_steps=0)


@pytest.mark.parametrize("name", ["train-tiny.yaml", "supernet.yaml", "subnet.yaml", "baseline.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = TrainConfig.from_yaml(CONFIGS / name)
    assert cfg.batch_size >= 1
