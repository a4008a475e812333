"""What each entry point loads: restoring and evaluating photos never pay for the training stack."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["dequantizer", "dequantizer.restore", "dequantizer.evaluate", "dequantizer.cli",
                                    "dequantizer.data.flickr", "dequantizer.app"])
def test_the_tool_imports_without_lightning(module):
    code = (f"import sys, {module}\n"
            "loaded = [name for name in ('lightning', 'pytorch_lightning') if name in sys.modules]\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
