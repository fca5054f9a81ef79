import pytest

from benchmark.errors import ConfigError
from benchmark.registry import Registry, registry


def test_register_and_get_roundtrip():
    reg = Registry()

    @reg.register_metric("my_metric")
    def my_metric():
        return 1

    assert reg.get_metric("my_metric") is my_metric


def test_unknown_name_suggests_close_names():
    reg = Registry()
    reg.register("widget", "late_fusion")(object)
    with pytest.raises(ConfigError, match="late_fusion"):
        reg.get("widget", "late_fusoin")


def test_conflicting_registration_is_refused():
    reg = Registry()
    reg.register("widget", "a")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("widget", "a")(str)


def test_builtins_are_discovered_lazily():
    assert "roc_auc" in registry.names("metric")
    assert {"teacher", "student_only"} <= set(registry.names("method"))
    assert {"adam_w"} <= set(registry.names("optimizer"))


def test_list_helpers_handle_english_plurals():
    assert "cross_entropy" in registry.list_losses()
    assert "shapley" in registry.list_saliencies()
    assert "roc_auc" in registry.list_metrics()
