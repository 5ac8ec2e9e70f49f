#!/usr/bin/env python3
"""Fails when an import edge is not allowed by docs/architecture.md's module table.

Reads the table's "may import" columns; checks every non-test target of Package.swift (through
`swift package dump-package`) and every `import` line of Sources/NAME/*.swift against them.
"""
import json
import os
import re
import subprocess
import sys

SYSTEM = {"Foundation", "FoundationEssentials", "Glibc", "Dispatch", "Synchronization", "Testing"}
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
doc = os.path.join(root, "docs", "architecture.md")


def names(cell):
    return {n for n in re.findall(r"`([^`]+)`", cell)}


allowed = {}
with open(doc, encoding="utf-8") as f:
    for line in f:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            allowed[cells[0].strip("`")] = (names(cells[2]), names(cells[3]))

dump = subprocess.run(["swift", "package", "dump-package"], cwd=root, capture_output=True, text=True)
if dump.returncode != 0:
    sys.exit("check-architecture: swift package dump-package failed:\n" + dump.stderr)
package = json.loads(dump.stdout)
problems = []
for target in package["targets"]:
    name = target["name"]
    if target["type"] == "test":
        continue
    if name not in allowed:
        problems.append(f"Package.swift: target {name} is not in {doc}'s module table")
        continue
    kemu, packages = allowed[name]
    for dep in target.get("dependencies", []):
        kind, value = next(iter(dep.items()))
        dep_name = value[0]
        ok = dep_name in packages if kind == "product" else dep_name in kemu
        if not ok:
            problems.append(f"Package.swift: {name} depends on {dep_name}, which the module table does not allow "
                            f"(allowed: {', '.join(sorted(kemu | packages)) or 'none'})")
    sources = os.path.join(root, "Sources", name)
    for directory, _, files in os.walk(sources):
        for file in sorted(files):
            if not file.endswith(".swift"):
                continue
            path = os.path.join(directory, file)
            with open(path, encoding="utf-8") as f:
                in_literal = False  # inside a multi-line string (a script kemu runs), not Swift
                for number, line in enumerate(f, 1):
                    if line.count('"""') % 2 == 1:
                        in_literal = not in_literal
                        continue
                    if in_literal:
                        continue
                    m = re.match(r"\s*(?:@\w+\s+)*import\s+(?:\w+\s+)?([A-Za-z_][A-Za-z0-9_]*)", line)
                    if m and m.group(1) not in SYSTEM and m.group(1) not in kemu | packages:
                        problems.append(f"{os.path.relpath(path, root)}:{number}: {name} imports {m.group(1)}, "
                                        "which the module table in docs/architecture.md does not allow")
for name in sorted(set(allowed) - {t["name"] for t in package["targets"]}):
    problems.append(f"{doc}: module {name} is not a target of Package.swift")
if problems:
    print("check-architecture: " + str(len(problems)) + " import edge(s) the design does not allow:")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"check-architecture: {len(allowed)} modules, every import edge allowed by docs/architecture.md")
