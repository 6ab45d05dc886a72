"""Import torchvision on a CPU-only torch whose torchvision C++ ops do not load.

torchvision's compiled extension (`torchvision/_C.so`) is built against a different torch here, so it
fails to load silently; `import torchvision` then dies in `torchvision/_meta_registrations.py` with
"operator torchvision::nms does not exist", because it registers Meta kernels for ops nobody defined.
Declaring the missing schemas (no kernels) lets the import succeed. Model builders never call these ops;
calling `torchvision.ops.nms` still fails, with a clear "no kernel" error.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

import torch

# Ops whose schemas `torchvision/_meta_registrations.py` needs before any other import step.
_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# Kept alive for the whole process: the definitions are dropped when the Library object is collected.
_LIBRARY: torch.library.Library | None = None


def _has_schema(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def _try_load_extension() -> None:
    """Load torchvision's own `_C` library if it works here, so its real ops win over our stubs."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    folder = os.path.dirname(spec.origin)
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("_C.") and entry.endswith((".so", ".pyd")):
            try:
                torch.ops.load_library(os.path.join(folder, entry))
            except (OSError, RuntimeError):
                pass
            return


def import_torchvision() -> ModuleType:
    """Return the torchvision module, declaring the op schemas it needs if they are missing.

    Idempotent: does nothing beyond the import when torchvision is already imported or its ops exist.
    """
    global _LIBRARY
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    if not all(_has_schema(name) for name in _SCHEMAS):
        _try_load_extension()
    missing = [name for name in _SCHEMAS if not _has_schema(name)]
    if missing:
        if _LIBRARY is None:
            _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for name in missing:
            _LIBRARY.define(_SCHEMAS[name])
    import torchvision

    return torchvision
