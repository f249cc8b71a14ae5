"""What a statement imports, measured in a fresh interpreter (cold start is part of the product)."""

from __future__ import annotations

import json
import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    """The modules loaded after running `statement` in a new interpreter."""
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(result.stdout))
