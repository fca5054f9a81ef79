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


def test_a_module_dropped_into_a_kinds_package_is_found_without_being_listed(tmp_path, monkeypatch):
    package = tmp_path / "msd_tmp_schemes"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "saliency_squared.py").write_text(
        "import msd_tmp_schemes\n"
        "@msd_tmp_schemes.REG.register_weighting('saliency_squared')\n"
        "class SaliencySquared: ...\n"
    )
    (package / "_private.py").write_text("raise RuntimeError('private modules are not imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import msd_tmp_schemes

    reg = Registry({"weighting": ("msd_tmp_schemes",)})
    monkeypatch.setattr(msd_tmp_schemes, "REG", reg, raising=False)
    assert reg.get_weighting("saliency_squared").__name__ == "SaliencySquared"
    assert reg.names("weighting") == ["saliency_squared"]


def test_the_unknown_name_error_says_where_a_new_component_goes():
    with pytest.raises(ConfigError, match=r"any module of benchmark\.distill \(found there without being listed\)"):
        registry.get_weighting("saliency_squared")


def test_the_worked_example_of_a_new_scheme_in_the_architecture_doc_is_found_and_runs(tmp_path, monkeypatch):
    """docs/architecture.md §4.3's "saliency squared" module, dropped into a package as the
    doc says, is found by discovery alone and computes what the doc states."""
    import re
    from pathlib import Path

    import torch

    import benchmark.registry as registry_module

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    match = re.search(r"```python\n(# benchmark/distill/weighting_saliency_squared\.py\n.*?)```", doc, re.S)
    assert match, "the worked example is missing from docs/architecture.md §4.3"
    package = tmp_path / "msd_doc_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "weighting_saliency_squared.py").write_text(match.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh = Registry({"weighting": ("msd_doc_example",)})
    monkeypatch.setattr(registry_module, "registry", fresh)

    scheme = fresh.get_weighting("saliency_squared")()
    assert scheme.needs_saliency and not scheme.needs_population
    weights = scheme.weights({"image": torch.tensor([1.0, 2.0, 0.0]), "text": torch.tensor([1.0, 0.0, 0.0])})
    assert torch.allclose(weights["image"] + weights["text"], torch.full((3,), 2.0))
    assert torch.allclose(weights["image"], torch.tensor([1.0, 2.0, 1.0]))  # equal, all image, no saliency


def test_a_kind_kept_in_one_module_names_that_module_and_the_list_to_extend():
    with pytest.raises(ConfigError, match=r"in benchmark\.grid\.launchers, or in a module added to _HOMES"):
        registry.get_launcher("kubernetes")
