"""mlcore is framework-free: importing every module pulls in no Django, Celery or DRF."""

import subprocess
import sys

from tests.conftest import ROOT


def test_mlcore_imports_no_framework():
    code = (
        "import importlib, pkgutil, sys, mlcore\n"
        "for m in pkgutil.walk_packages(mlcore.__path__, 'mlcore.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not {'django', 'celery', 'rest_framework'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
