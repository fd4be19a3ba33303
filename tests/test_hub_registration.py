"""Our entries reach s3prl.hub in a fresh process, with no import of our package; plugins extend them."""

import sys
import textwrap
import types
import warnings

import pytest

from s3prl_redundancy.testing.processes import run_python
from s3prl_redundancy import plugins
from s3prl_redundancy.hub_registration import register

OUR_ENTRIES = ("pruned_hubert", "pruned_wav2vec2", "pruned_wavlm")


def test_fresh_process_sees_entries_without_importing_us(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import s3prl.hub as h
        print(h.pruned_hubert.__module__)
        print(sorted(n for n in h.options() if n.startswith("pruned_")))
        print("s3prl_redundancy.upstreams.pruned.hubconf" in sys.modules)
        """
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-3] == "s3prl_redundancy.upstreams.pruned.hubconf"
    assert lines[-2] == str(sorted(OUR_ENTRIES))


def test_startup_hook_is_lazy(tmp_path):
    """The .pth hook is installed at start-up but imports neither torch nor s3prl until s3prl is imported."""
    out = run_python(
        "import sys; print('torch' in sys.modules, 's3prl' in sys.modules, 's3prl_redundancy._autoload' in sys.modules)",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


def test_hook_can_be_disabled(tmp_path):
    out = run_python(
        "import sys; print(any(type(f).__name__ == 'S3prlImportWatcher' for f in sys.meta_path))",
        cwd=tmp_path,
        env={"S3PRL_REDUNDANCY_DISABLE": "1"},
    )
    assert out.stdout.split() == ["False"]


def test_s3prl_upstream_class_resolves_our_names(tiny_ckpts, tmp_path):
    """s3prl's own S3PRLUpstream (new API) resolves pruned entries by name, like run_downstream does."""
    from s3prl.nn.upstream import S3PRLUpstream

    config = tmp_path / "k.yaml"
    config.write_text("keep_layers: [0, 1]\n")
    assert "pruned_hubert" in S3PRLUpstream.available_names()
    import s3prl.hub as hub

    upstream = getattr(hub, "pruned_hubert")(ckpt=str(tiny_ckpts["hubert"]), model_config=str(config))
    assert upstream.pruning["keep_layers"] == [0, 1]


def test_register_is_idempotent_and_never_replaces_s3prl_names():
    hub = types.ModuleType("fake_hub")
    hub.pruned_wavlm = sentinel = object()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        added = register(hub)
    assert {"pruned_hubert", "pruned_wav2vec2"} <= set(added) and "pruned_wavlm" not in added
    assert hub.pruned_wavlm is sentinel
    assert any("already has an entry 'pruned_wavlm'" in str(w.message) for w in caught)
    assert register(hub) == []


PLUGIN_SOURCE = '''
from s3prl_redundancy.hookspecs import hookimpl

def my_entry(ckpt=None, model_config=None, refresh=False, **kwargs):
    return "my upstream"

class MyMetric:
    name = "my_metric"

@hookimpl
def s3prl_redundancy_upstream_entries():
    return {"my_third_party_entry": my_entry}

@hookimpl
def s3prl_redundancy_similarity_metrics():
    return {"my_metric": MyMetric}
'''


@pytest.fixture
def third_party_plugin(tmp_path, monkeypatch):
    """A package installed the way pip installs it: a module plus a dist-info with an entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_redundancy_plugin.py").write_text(PLUGIN_SOURCE)
    info = site / "my_redundancy_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-redundancy-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[s3prl_redundancy]\nmine = my_redundancy_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    yield site
    plugins.reset()
    sys.modules.pop("my_redundancy_plugin", None)


def test_third_party_plugin_from_entry_point(third_party_plugin, tmp_path):
    entries = plugins.upstream_entries()
    assert set(OUR_ENTRIES) <= set(entries) and "my_third_party_entry" in entries
    assert "my_metric" in plugins.similarity_metrics()
    # and in a fresh process, straight into s3prl.hub
    out = run_python(
        "import s3prl.hub as h; print(h.my_third_party_entry())", cwd=tmp_path, env={"PYTHONPATH": str(third_party_plugin)}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "my upstream"


def test_conflicting_plugins_are_reported(monkeypatch):
    class A:
        pass

    class Other:
        @staticmethod
        def s3prl_redundancy_upstream_entries():
            return {"pruned_hubert": A}

    from s3prl_redundancy.hookspecs import hookimpl

    Other.s3prl_redundancy_upstream_entries = hookimpl(Other.s3prl_redundancy_upstream_entries)
    plugins.reset()
    pm = plugins.get_plugin_manager()
    pm.register(Other, name="other")
    try:
        with pytest.raises(ValueError, match="two plugins define the upstream entry 'pruned_hubert'"):
            plugins.upstream_entries()
    finally:
        plugins.reset()
