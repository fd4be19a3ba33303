"""A regular (non-editable) `pip install .` works like the editable one: .pth hook, upstreams, recipes."""

import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    (path,) = out.glob("s3prl_redundancy-*.whl")
    return path


def test_setup_cfg_lists_every_package_of_the_tree():
    """setup.cfg names packages explicitly: a package folder missing there is missing from the wheel (an
    editable install hides that)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    installed_as = {"s3prl_redundancy": "s3prl_redundancy", "upstreams": "s3prl_redundancy.upstreams",
                    "downstream_recipes": "s3prl_redundancy.downstream_recipes"}
    found = set()
    for top, name in installed_as.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed, (sorted(found - listed), sorted(listed - found))


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "s3prl_redundancy_hub.pth" in names  # at the root: lands in site-packages
    assert "s3prl_redundancy/upstreams/pruned/hubconf.py" in names
    assert "s3prl_redundancy/downstream_recipes/example_smoke.yaml" in names
    assert {"s3prl_redundancy/upstreams/tiny/tiny_hubert.pt", "s3prl_redundancy/upstreams/tiny/hubconf.py",
            "s3prl_redundancy/upstreams/compressed/hubconf.py", "s3prl_redundancy/upstreams/distilled/hubconf.py",
            "s3prl_redundancy/downstream_recipes/ks.yaml", "s3prl_redundancy/downstream_recipes/asr/char.dict"} <= names
    assert not any(n.startswith(("upstreams/", "downstream_recipes/", "tests/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_registers_entries_in_a_fresh_interpreter(wheel, tmp_path):
    """A separate venv whose site-packages holds only the wheel, plus a plain path entry to this venv's
    packages (torch, s3prl): no editable finder, so everything must come from the installed wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    (site / "zz_outer_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = textwrap.dedent(
        """
        import importlib.resources, sys, s3prl.hub as h
        print(sys.modules[h.pruned_hubert.__module__].__file__)  # the hubconf.py that defines the entry
        print(importlib.resources.files("s3prl_redundancy.downstream_recipes").joinpath("example_smoke.yaml").is_file())
        """
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    filename, has_recipe = out.stdout.strip().splitlines()[-2:]
    assert filename.startswith(str(site)) and filename.endswith("upstreams/pruned/hubconf.py")
    assert has_recipe == "True"
