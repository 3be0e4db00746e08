"""Environment check: what a learner pastes into a bug report (notebook 00).

Run ``python -m lorakit.check``: each package with ``[OK]``/``[FAIL]`` and its version, the
Python that runs the kernel, and the device the course will use.
"""

from __future__ import annotations

import importlib
import platform
import sys

# (import name, what it is for); the first group is required, the second is the reference set
REQUIRED = [
    ("torch", "tensors and autograd"),
    ("numpy", "arrays"),
    ("matplotlib", "figures"),
    ("tqdm", "progress bars"),
    ("safetensors", "weight files that cannot run code"),
    ("ipywidgets", "sliders"),
]
REFERENCE = [
    ("bitsandbytes", "reference NF4/FP4 quantization"),
    ("peft", "reference LoRA"),
    ("transformers", "Hugging Face models"),
    ("torchao", "a second NF4 dialect"),
]


def package_status(name: str) -> tuple[bool, str]:
    """(importable, version or the import error) for one package."""
    try:
        module = importlib.import_module(name)
    except Exception as e:  # a broken install can raise more than ImportError
        return False, f"{type(e).__name__}: {e}".splitlines()[0][:120]
    return True, str(getattr(module, "__version__", "unknown version"))


def report() -> tuple[str, bool]:
    """The check as text, and whether every required package imports."""
    lines = []
    all_required = True
    for title, group, required in (("required", REQUIRED, True), ("reference", REFERENCE, False)):
        lines.append(f"{title} packages:")
        for name, why in group:
            ok, version = package_status(name)
            all_required &= ok or not required
            lines.append(f"  [{'OK' if ok else 'FAIL'}] {name:<13} {version:<24} {why}")
    from .train import fast_mode, pick_device
    import lorakit

    lines += [
        f"lorakit    {lorakit.__version__} at {lorakit.__file__}",
        f"python     {platform.python_version()} at {sys.executable}",
        f"platform   {platform.platform()}",
        f"device     {pick_device()}",
        f"test mode  {'on (LORAKIT_FAST)' if fast_mode() else 'off'}",
    ]
    return "\n".join(lines), all_required


def main() -> int:
    text, ok = report()
    print(text)
    if not ok:
        print("\nSome required packages failed to import: run `make lab` (it installs them) "
              "or `pip install -r requirements.txt -e .`.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
