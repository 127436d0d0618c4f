"""The layout rules of the README, checked by import-linter's contracts (``.importlinter``)."""
import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
PACKAGE = REPO / "ptnmt_fairseq"


def lint_imports(package_parent):
    return subprocess.run([LINT_IMPORTS, "--config", str(REPO / ".importlinter"), "--no-cache"],
                          capture_output=True, text=True, cwd=package_parent,
                          env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"})


def contract_modules(name, key="layers"):
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    text = config[f"importlinter:contract:{name}"][key]
    return {m.strip() for line in text.splitlines() for m in line.replace(":", "|").split("|")
            if m.strip()}


def subpackages(path):
    return {p.name for p in path.iterdir() if (p / "__init__.py").is_file()}


def test_import_contracts_are_kept():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


def test_every_method_and_family_is_under_a_contract():
    methods = {m.split(".")[-1] for m in contract_modules("methods")}
    assert subpackages(PACKAGE) == methods  # 'common' plus every method package
    families = contract_modules("families")
    assert subpackages(PACKAGE / "common") <= families
    base_files = {p.stem for p in (PACKAGE / "common").glob("*.py") if p.stem != "__init__"}
    assert base_files <= families, "a new base file of common/ must join the lower layer"


def test_a_method_importing_another_method_breaks_the_contract(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "ptnmt_fairseq",
                    ignore=shutil.ignore_patterns("__pycache__"))
    criterion = tmp_path / "ptnmt_fairseq" / "xstnet" / "criterion.py"
    criterion.write_text(criterion.read_text() + "\nfrom ptnmt_fairseq.abnet import encoder\n")
    speech = tmp_path / "ptnmt_fairseq" / "common" / "speech" / "audio.py"
    speech.write_text(speech.read_text() + "\nfrom ptnmt_fairseq.common.bert import pretrained\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    assert "ptnmt_fairseq.xstnet is not allowed to import ptnmt_fairseq.abnet" in out.stdout
    assert "ptnmt_fairseq.common.speech is not allowed to import ptnmt_fairseq.common.bert" in out.stdout
