"""Every task, architecture, criterion and LR scheduler ptnmt_fairseq registers is visible to
``fairseq-train --user-dir ptnmt_fairseq`` and ``fairseq-generate``, and is the plugin's own class
(fairseq 0.12.3 silently keeps a built-in on a name clash instead of raising)."""
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import BASE_ENV, PLUGIN, run_cli

DISCOVER = textwrap.dedent("""
    import json, sys
    from fairseq import registry, utils
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.tasks import TASK_REGISTRY
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.optim.lr_scheduler import LR_SCHEDULER_REGISTRY

    tables = {"arch": ARCH_MODEL_REGISTRY, "task": TASK_REGISTRY,
              "criterion": CRITERION_REGISTRY, "lr-scheduler": LR_SCHEDULER_REGISTRY}
    before = {k: dict(v) for k, v in tables.items()}
    utils.import_user_module(type("Args", (), {"user_dir": sys.argv[1]})())
    added, foreign = {}, []
    for kind, table in tables.items():
        added[kind] = sorted(set(table) - set(before[kind]))
        for name in added[kind]:
            module = getattr(table[name], "__module__", "")
            if not module.startswith(sys.argv[2]):
                foreign.append(f"{kind} {name} -> {module}")
    print(json.dumps({"added": added, "foreign": foreign}))
""")


def discover(user_dir, package):
    proc = subprocess.run([sys.executable, "-c", DISCOVER, user_dir, package],
                          capture_output=True, text=True, env=BASE_ENV, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_visible(user_dir, added):
    """argparse checks every occurrence of a choices option, so one ``--help`` call with all the
    names (``--arch a --arch b --task t ...``) fails on the first name the CLI does not offer."""
    train_args = [a for kind, names in added.items() for name in names for a in (f"--{kind}", name)]
    # fairseq-generate takes the arch from the checkpoint; it must offer the tasks/criterions.
    generate_args = [a for kind, names in added.items() if kind in ("task", "criterion")
                     for name in names for a in (f"--{kind}", name)]
    for script, args in (("fairseq-train", train_args), ("fairseq-generate", generate_args)):
        proc = run_cli(script, ["--user-dir", user_dir, *args, "--help"], check=False)
        errors = [line[:300] for line in proc.stderr.splitlines() if "error:" in line]
        assert proc.returncode == 0 and not errors, f"{script}: {errors or proc.stderr[-2000:]}"


@pytest.fixture
def toy_plugin(tmp_path):
    """A one-arch plugin: proves the discovery and visibility checks can see a registration."""
    pkg = tmp_path / "ptnmt_toy_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from fairseq.models import register_model_architecture
        from fairseq.models.transformer import base_architecture

        @register_model_architecture("transformer", "ptnmt_toy_arch")
        def ptnmt_toy_arch(args):
            base_architecture(args)
    """))
    return str(pkg)


def test_harness_sees_a_registration(toy_plugin):
    found = discover(toy_plugin, "ptnmt_toy_plugin")
    assert found["added"]["arch"] == ["ptnmt_toy_arch"]
    assert_visible(toy_plugin, found["added"])


def test_harness_notices_a_missing_name(toy_plugin):
    with pytest.raises(AssertionError, match="invalid choice"):
        assert_visible(toy_plugin, {"arch": ["ptnmt_not_registered"]})


def test_every_plugin_component_is_visible_and_ours():
    found = discover(PLUGIN, "ptnmt_fairseq")
    assert found["foreign"] == [], "a plugin name clashes with a built-in: " + str(found)
    assert_visible(PLUGIN, found["added"])

