"""Commands start without the heavy libraries: they are imported where a model is trained or loaded."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import lightgbm_only, trained_root, write_binary_spec

HEAVY = ("sklearn", "lightgbm", "matplotlib", "pandas", "scipy", "skops", "alembic")
# What only a command that opens the workspace needs: ``assay --help`` starts without them.
STORE = ("sqlalchemy", "assay.workspace", "assay.registry.versions", "assay.serving.scoring")


def test_the_command_line_imports_no_heavy_library() -> None:
    code = f"import sys, assay.cli; print(' '.join(m for m in {HEAVY + STORE!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_choice_kept_in_a_domain_module_is_offered_and_checked() -> None:
    # ``--role`` takes its values from the accounts module, imported only when the option is used.
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from assay.cli import main\n"
        "runner = CliRunner()\n"
        "print(runner.invoke(main, ['user', 'create', '--help']).output)\n"
        "print(runner.invoke(main, ['user', 'create', 'bob', '--role', 'owner']).output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--role [admin|reviewer]" in out
    assert "'owner' is not one of 'admin', 'reviewer'" in out


def test_listing_models_imports_no_modelling_library(tmp_path) -> None:
    # What ``assay models``/``assay show`` do: open the workspace (migrating its store) and read records.
    code = (
        "import sys\n"
        "from assay.cli import main\n"
        f"main(['--home', {str(tmp_path)!r}, 'models'], standalone_mode=False)\n"
        f"print('loaded:', *(m for m in {HEAVY[:-1]!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["no models yet", "loaded:"]


def test_a_command_on_an_up_to_date_store_does_not_import_alembic(tmp_path) -> None:
    # The first command migrates the new home (Alembic); later ones only read the version row.
    code = (
        "import sys\n"
        "from assay.cli import main\n"
        f"main(['--home', {str(tmp_path)!r}, 'models'], standalone_mode=False)\n"
        "print('alembic' in sys.modules)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in "12"
    ]
    assert [r.stdout.splitlines()[-1] for r in runs] == ["True", "False"]


def test_scoring_a_file_with_a_tree_model_imports_no_modelling_library(tmp_path) -> None:
    # The model is read and predicted by LightGBM's library itself: the lightgbm package would
    # import scikit-learn and SciPy (0.9 s of the command), and reading a file needs no spec.
    home = trained_root(tmp_path, lightgbm_only(write_binary_spec(tmp_path / "data", 600, 200))) / "home"
    code = (
        "import sys\n"
        "from assay.cli import main\n"
        "from assay.registry import lightgbm_lib\n"
        f"main(['--home', {str(home)!r}, 'score', 'damaging', '--no-header', '--input',\n"
        f"      {str(tmp_path / 'data' / 'edits.test.tsv')!r}, '--output', {str(tmp_path / 'out.csv')!r}],\n"
        "     standalone_mode=False)\n"
        f"print('loaded:', *(m for m in {HEAVY[:-1]!r} if m in sys.modules))\n"
        "print('library loaded:', lightgbm_lib.library.cache_info().currsize == 1)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["loaded: pandas", "library loaded: True"]
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 201  # a header and every row
