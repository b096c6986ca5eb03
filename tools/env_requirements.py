"""Print environment.yml's pip section as a pip requirements file (the single source of pins).

    python tools/env_requirements.py environment.yml            # the normal requirements
    python tools/env_requirements.py environment.yml --no-deps  # packages to install with --no-deps

Lines of the form ``# no-deps: NAME==VERSION`` inside the pip section list packages whose own pins
conflict with the study's (unbabel-comet pins transformers<5) and are installed without dependencies.
Needs only the standard library, so it runs before the environment exists.
"""

import re
import sys


def parse(path: str) -> tuple[list[str], list[str]]:
    reqs, nodeps, inside, indent = [], [], False, None
    for line in open(path, encoding="utf-8"):
        stripped = line.strip()
        if re.match(r"^-\s*pip:\s*$", stripped):
            inside, indent = True, len(line) - len(line.lstrip())
            continue
        if not inside or not stripped:
            continue
        if len(line) - len(line.lstrip()) <= indent and not stripped.startswith("#"):
            break
        m = re.match(r"^#\s*no-deps:\s*(\S+)", stripped)
        if m:
            nodeps.append(m.group(1))
        elif stripped.startswith("- "):
            reqs.append(stripped[2:].split("#")[0].strip())
    return reqs, nodeps


if __name__ == "__main__":
    reqs, nodeps = parse(sys.argv[1])
    print("\n".join(nodeps if "--no-deps" in sys.argv[2:] else reqs))
