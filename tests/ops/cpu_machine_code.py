"""Which x86-64 level each function of fabnet._C needs, read from its machine code.

``objdump -d`` lists every instruction under its function's symbol. An instruction needs:

- x86-64-v4 (AVX-512): a zmm or mask (k0-k7) register, or an EVEX-only mnemonic;
- x86-64-v3 (AVX, AVX2, FMA, BMI1/2, LZCNT, MOVBE, F16C): a VEX-encoded mnemonic (they all
  start with ``v``), a ymm register, or one of the BMI / LZCNT / MOVBE mnemonics;
- x86-64-v2 or less otherwise (SSE up to 4.2, POPCNT). ``tzcnt`` is left out: compilers emit it
  for the baseline on purpose, since older CPUs run its encoding as ``bsf``.

The build records its baseline and the variants it dispatches to (fabnet/_build_info.json); the
variants' symbols carry their namespace (csrc/isa.h: ``isa_v3``, ``isa_v4``). So a library keeps
its record when every function needing more than the baseline belongs to a variant of at least
that level.

    python -m tests.ops.cpu_machine_code [LIBRARY]     # counts per level, in and out of variants
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")
_V3_SCALAR = {
    "andn",
    "bextr",
    "blsi",
    "blsmsk",
    "blsr",
    "bzhi",
    "mulx",
    "pdep",
    "pext",
    "rorx",
    "sarx",
    "shlx",
    "shrx",
    "lzcnt",
    "movbe",
}
_V4_MNEMONIC = re.compile(
    r"^(k\w+|vperm[it]2\w*|vpternlog\w*|vpcompress\w*|vpexpand\w*|vcompress\w*|vexpand\w*"
    r"|vscalef\w*|vgetexp\w*|vrndscale\w*|vfixupimm\w*|vrcp14\w*|vrsqrt14\w*)$"
)
_MASK_REGISTER = re.compile(r"%k[0-7]\b")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_INSTRUCTION = re.compile(r"^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$")


def level_of(mnemonic: str, operands: str) -> str:
    """The x86-64 level one instruction needs."""
    if "zmm" in operands or _MASK_REGISTER.search(operands) or _V4_MNEMONIC.match(mnemonic) or "{" in operands:
        return "x86-64-v4"
    if mnemonic.startswith("v") or "ymm" in operands or mnemonic in _V3_SCALAR:
        return "x86-64-v3"
    return "x86-64-v2"


def variant_of(symbol: str) -> str:
    """The level a function was compiled for, from its (mangled) name: the baseline's otherwise."""
    if "isa_v4" in symbol:
        return "x86-64-v4"
    if "isa_v3" in symbol:
        return "x86-64-v3"
    return "x86-64-v2"


def functions(library: str) -> dict[str, Counter]:
    """symbol -> Counter of the levels its instructions need."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise RuntimeError("objdump (binutils) is not installed")
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", library], capture_output=True, text=True, check=True
    ).stdout
    out: dict[str, Counter] = {}
    current = None
    for line in text.splitlines():
        m = _FUNCTION.match(line)
        if m:
            current = out.setdefault(m.group(1), Counter())
            continue
        m = _INSTRUCTION.match(line)
        if m and current is not None:
            current[level_of(m.group(1), m.group(2))] += 1
    return out


def summary(library: str) -> dict:
    """Instruction counts per needed level, split by the variant the function belongs to, and the
    functions that need more than their variant (empty for a library that keeps its record)."""
    counts: Counter = Counter()
    beyond = []
    for symbol, levels in functions(library).items():
        variant = variant_of(symbol)
        for level, n in levels.items():
            counts[(variant, level)] += n
            if LEVELS.index(level) > LEVELS.index(variant):
                beyond.append((symbol, level, n))
    return {"counts": counts, "beyond": beyond}


def library_path() -> str:
    import importlib.util

    return importlib.util.find_spec("fabnet._C").origin


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else library_path()
    result = summary(path)
    print(f"{Path(path).name}: instructions by the level they need, per variant")
    print("| variant | needs v2 | needs v3 | needs v4 |\n|---|---:|---:|---:|")
    for variant in LEVELS:
        row = [result["counts"][(variant, level)] for level in LEVELS]
        print(f"| {variant} | " + " | ".join(str(n) for n in row) + " |")
    print(f"functions needing more than their variant: {len(result['beyond'])}")
    for symbol, level, n in result["beyond"][:20]:
        print(f"  {n} x {level} in {symbol}")
