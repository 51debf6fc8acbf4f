"""Make the registry's (CUDA-built) torchvision importable with CPU torch.

torchvision/_meta_registrations.py registers fake kernels for torchvision::nms and ::qnms unconditionally;
with CPU torch the C++ ops library is not loaded, so the registration fails and `import torchvision` raises
"operator torchvision::nms does not exist". Guarding those two registrations with
torchvision.extension._has_ops() makes the Python transforms work (the C++ ops stay unavailable).
Idempotent; does nothing when torchvision imports already.
"""
import importlib.util
import pathlib
import subprocess
import sys

MARK = "# videorft: guarded for CPU torch"


def imports_ok() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


def patch(path: pathlib.Path) -> bool:
    src = path.read_text()
    if MARK in src:
        return False
    out, changed = [], 0
    for line in src.splitlines(keepends=True):
        stripped = line.lstrip()
        if stripped.startswith('@torch.library.register_fake("torchvision::nms")') or stripped.startswith(
            '@torch.library.register_fake("torchvision::qnms")'
        ):
            indent = line[: len(line) - len(stripped)]
            name = "nms" if "::nms" in stripped else "qnms"
            line = f'{indent}@(_videorft_guard("torchvision::{name}"))\n'
            changed += 1
        out.append(line)
    if not changed:
        return False
    helper = (
        f"\n{MARK}\n"
        "def _videorft_guard(op):\n"
        "    from torchvision.extension import _has_ops\n"
        "    return torch.library.register_fake(op) if _has_ops() else (lambda fn: fn)\n\n"
    )
    text = "".join(out)
    # put the helper after the imports (before the first decorator)
    idx = text.index("@")
    path.write_text(text[:idx] + helper + text[idx:])
    return True


def main() -> int:
    if imports_ok():
        print("torchvision: imports fine, nothing to do")
        return 0
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        print("torchvision: not installed, nothing to do")
        return 0
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
    changed = patch(path)
    ok = imports_ok()
    print(f"torchvision: patched={changed} imports={'ok' if ok else 'FAILED'} ({path})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
