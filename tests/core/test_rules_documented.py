"""Every [rule] key is documented in docs/assumptions.md and exists in the default config."""

from pathlib import Path

from omegaconf import OmegaConf

from benchmark.config.loader import build_config
from benchmark.config.rules import RULE_KEYS, rule_values

ASSUMPTIONS = Path(__file__).resolve().parents[2] / "docs" / "assumptions.md"


def test_every_rule_key_is_in_assumptions_md():
    text = ASSUMPTIONS.read_text()
    missing = [key for key in RULE_KEYS if f"`{key}" not in text and key not in text]
    assert not missing, f"document these [rule] keys in docs/assumptions.md: {missing}"


def test_every_rule_key_exists_in_the_default_config():
    config = build_config([])
    for key in RULE_KEYS:
        assert OmegaConf.select(config, key, default="<absent>") != "<absent>", key


def test_rule_values_report_the_active_splits():
    values = rule_values(build_config(["dataset=hateful_memes"]))
    assert values["dataset_config.hateful_memes.annotations.val"] == ["hateful_memes/defaults/annotations/dev_unseen.jsonl"]
    assert values["views.removal"] == "drop"
