"""Environment check: what a learner pastes into a bug report (notebook 00).

Run ``python -m lorakit.check``: each package with ``[OK]``/``[FAIL]`` and its version, the
Python that runs the kernel, and the device the course will use. Packages are imported through
``lorakit.quiet.quiet``, so their known-harmless start-up messages (bitsandbytes and torchao
looking for GPU kernels a CPU machine does not have) do not paint a healthy check red; the report
says in one line which packages printed something, and ``lorakit.quiet.HIDDEN`` keeps the text.
"""

from __future__ import annotations

import importlib
import platform
import sys

from .quiet import HIDDEN, quiet

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
    error = None
    with quiet() as buffer:
        try:
            module = importlib.import_module(name)
        except Exception as e:  # a broken install can raise more than ImportError
            error = f"{type(e).__name__}: {e}".splitlines()[0][:120]
    if buffer.getvalue().strip():
        HIDDEN[name] = buffer.getvalue()
    if error is not None:
        return False, error
    return True, str(getattr(module, "__version__", "unknown version"))


def hidden_noise_line(names) -> str | None:
    """One line naming the packages whose import printed something (hidden), or None."""
    noisy = [(n, len(HIDDEN[n].strip().splitlines())) for n in names if HIDDEN.get(n, "").strip()]
    if not noisy:
        return None
    which = ", ".join(f"{n} ({k} line{'s' * (k != 1)})" for n, k in noisy)
    return (f"hidden     import messages from {which}: known-harmless notices about optional "
            "kernels; the text is in lorakit.quiet.HIDDEN")


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
    noise = hidden_noise_line([name for name, _ in REQUIRED + REFERENCE])
    if noise:
        lines.append(noise)
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
