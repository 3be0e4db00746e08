"""The oldest versions of the reference libraries that the course's calls work with (notebook 09).

One home for the floors: ``requirements.txt`` and ``pyproject.toml`` must say the same (a test
reads both), and ``lorakit.hf`` refuses an older transformers with a message naming the call
that needs the newer one, instead of failing later inside ``from_pretrained`` with
``unexpected keyword argument 'dtype'``.

Why each floor:

- transformers 4.56: ``from_pretrained(..., dtype=...)`` (before 4.56 the argument was
  ``torch_dtype``, and ``dtype`` was passed on to the model's ``__init__`` and refused).
- PEFT 0.13: ``LoraConfig(target_modules="all-linear")`` (0.8), ``use_dora`` (0.9),
  ``create_loraplus_optimizer`` (0.10), ``init_lora_weights="pissa"/"olora"`` (0.11) and the
  ``adapter_names`` mixed batches (0.10) used by notebooks 04 and 12.
- bitsandbytes 0.47: the CPU backend for NF4/FP4 4-bit quantization that notebooks 06–09 compare
  against (before 0.47 bitsandbytes' 4-bit functions needed CUDA).

Comparison follows PEP 440 on the release numbers; a pre-release of the floor itself
(``4.56.0.dev0``, ``4.56.0rc1``) counts as older, as pip counts it.
"""

from __future__ import annotations

import re
from importlib import metadata

#: package -> (oldest version, the call that needs it)
FLOORS: dict[str, tuple[str, str]] = {
    "transformers": ("4.56", "AutoModelForCausalLM.from_pretrained(..., dtype=...)"),
    "peft": (
        "0.13",
        "LoraConfig(target_modules='all-linear', use_dora=...), create_loraplus_optimizer, "
        "init_lora_weights='pissa'/'olora'",
    ),
    "bitsandbytes": ("0.47", "4-bit NF4/FP4 quantization on the CPU backend"),
}

_VERSION = re.compile(r"^\s*v?(\d+(?:\.\d+)*)(.*)$")
_PRE = re.compile(r"^[.\-_]?(a|alpha|b|beta|c|rc|pre|preview|dev)\d*", re.IGNORECASE)


def version_key(version: str) -> tuple:
    """A sortable key for a version string: its release numbers, then 0 for a pre-release, 1 otherwise.

    ``"4.56.1+cu121"`` → ``(4, 56, 1, 1)``; ``"4.56.0.dev0"`` → ``(4, 56, 0, 0)``. Releases are
    padded to three numbers, so ``"4.56"`` equals ``"4.56.0"``.
    """
    match = _VERSION.match(str(version))
    if match is None:
        raise ValueError(f"not a version number: {version!r} (expected something like '4.56.1')")
    release = [int(x) for x in match.group(1).split(".")]
    release += [0] * (3 - len(release))
    rest = match.group(2)
    pre = (
        bool(_PRE.match(rest))
        if rest and not rest.startswith(("+", ".post", "post", "-post"))
        else False
    )
    return (*release, 0 if pre else 1)


def at_least(installed: str, floor: str) -> bool:
    """True when ``installed`` is ``floor`` or newer (a pre-release of ``floor`` is older)."""
    a, b = version_key(installed), version_key(floor)
    n = max(len(a), len(b)) - 1  # compare release numbers padded to the same length, then the flag
    pad = lambda k: (*k[:-1], *([0] * (n - (len(k) - 1))), k[-1])  # noqa: E731
    return pad(a) >= pad(b)


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def require(package: str, installed: str | None = None) -> None:
    """Raise ImportError naming the floor and the call that needs it if ``package`` is too old.

    ``installed`` defaults to what is installed; a package that is not installed passes (the
    caller's own import reports that).
    """
    if package not in FLOORS:
        raise ValueError(f"package must be one of {sorted(FLOORS)}, got {package!r}")
    floor, why = FLOORS[package]
    installed = installed if installed is not None else installed_version(package)
    if installed is not None and not at_least(installed, floor):
        raise ImportError(
            f"{package} {installed} is too old: lorakit needs {package}>={floor} for {why}. "
            f"Upgrade with: pip install -U '{package}>={floor}'"
        )
