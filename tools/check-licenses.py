#!/usr/bin/env python3
"""Offline licence check of every dependency (a stand-in for `cargo deny check licenses`,
which needs the network). Reads `cargo metadata`, fails if a crate's licence expression
does not allow at least one licence from ALLOWED, and prints a summary.

Usage: python3 tools/check-licenses.py [--list]
"""
import json, re, subprocess, sys

# Permissive licences compatible with distributing crowds under MIT OR Apache-2.0.
ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0", "Unlicense", "MPL-2.0",
    "BSL-1.0", "OpenSSL", "CDLA-Permissive-2.0",
}
# ring's licence is not a single SPDX id in older metadata; its terms are ISC/MIT/OpenSSL-style.
KNOWN = {"ring": "ISC AND MIT AND OpenSSL"}


def allowed(expr: str) -> bool:
    """True if the SPDX expression can be satisfied with ALLOWED licences."""
    expr = expr.replace("/", " OR ")
    for alternative in re.split(r"\s+OR\s+", expr):
        parts = [p.strip(" ()") for p in re.split(r"\s+AND\s+", alternative)]
        if all(p in ALLOWED for p in parts if p):
            return True
    # Nested parentheses: fall back to "every id mentioned is allowed".
    ids = [t for t in re.split(r"[\s()]+", expr) if t and t not in ("AND", "OR", "WITH")]
    return all(i in ALLOWED or i == "LLVM-exception" for i in ids)


def main() -> int:
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        capture_output=True, text=True, check=True).stdout)
    bad, seen = [], {}
    for pkg in meta["packages"]:
        if pkg.get("source") is None:
            continue  # our own crates
        lic = pkg.get("license") or KNOWN.get(pkg["name"])
        if not lic:
            bad.append(f"{pkg['name']} {pkg['version']}: no licence declared")
            continue
        seen.setdefault(lic, []).append(pkg["name"])
        if not allowed(lic):
            bad.append(f"{pkg['name']} {pkg['version']}: {lic}")
    if "--list" in sys.argv:
        for lic, names in sorted(seen.items(), key=lambda kv: -len(kv[1])):
            print(f"{len(names):4}  {lic}: {', '.join(sorted(set(names)))}")
    print(f"licences: {sum(len(v) for v in seen.values())} third-party crates checked, "
          f"{len(bad)} not allowed")
    for b in bad:
        print("  NOT ALLOWED:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
