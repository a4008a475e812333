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


def package_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, at its top or inside its functions."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "dequantizer"
    graph = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dequantizer"):
                imported.add(node.module)
                # `from dequantizer import onnx_engine`: the module named, not only its package
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("dequantizer")}
        graph[module] = imported
    # The packages' __init__s re-export their modules for users: the graph is of the modules themselves.
    packages = {"dequantizer", "dequantizer.data"}
    return {module: {name for name in imported if name in graph and name != module and name not in packages}
            for module, imported in graph.items() if module not in packages}


def test_the_package_has_no_import_cycle():
    graph = package_imports()
    assert "dequantizer.weights" not in graph["dequantizer.tiling"]
    assert "dequantizer.restore" not in graph["dequantizer.weights"]  # restore uses weights, never the reverse

    def cycle_from(start, path):
        for name in sorted(graph[path[-1]]):
            if name == start:
                return [*path, name]
            if name not in path:
                found = cycle_from(start, [*path, name])
                if found:
                    return found
        return None

    for module in graph:
        cycle = cycle_from(module, [module])
        assert cycle is None, " -> ".join(cycle)


def test_restoring_loads_neither_hydra_nor_lightning():
    code = ("import sys, dequantizer\n"
            "dequantizer.dequantize(__import__('numpy').zeros((16, 16, 3), 'uint8'))\n"
            "loaded = [name for name in ('lightning', 'hydra', 'omegaconf', 'torchmetrics') if name in sys.modules]\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("command, unwanted", [
    ("quantize", ("torch", "lightning", "hydra", "torchmetrics")),  # a JPEG round trip needs Pillow alone
    ("dequantize", ("lightning", "hydra", "omegaconf", "torchmetrics")),
])
def test_each_command_loads_only_what_it_needs(tmp_path, command, unwanted):
    code = ("import sys, numpy\n"
            "from PIL import Image\n"
            "from dequantizer.cli import main\n"
            f"Image.fromarray(numpy.zeros((16, 16, 3), 'uint8')).save(r'{tmp_path}/a.jpg', quality=50)\n"
            f"assert main(['{command}', r'{tmp_path}/a.jpg', '-o', r'{tmp_path}/out', '--quiet' if '{command}' == "
            "'dequantize' else '-q10']) == 0\n"
            f"loaded = [name for name in {unwanted!r} if name in sys.modules]\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
