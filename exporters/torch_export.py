"""The PyTorch eager baseline: a torch.export program saved as .pt2 (fp32 only).

On the target the runner calls `torch.export.load(path).module()(*inputs)`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from exporters.base import one_line, register_exporter
from exporters.errors import ExportError

SUFFIX = ".pt2"
FORMAT = "torch"
SUPPORTED = ("fp32",)


@register_exporter(FORMAT, SUFFIX, SUPPORTED, limits="the torch eager baseline runs fp32 only")
def export_torch(
    model: Any,
    example: tuple[Any, ...],
    precision: str,
    out_path: Path,
    calibration: np.ndarray | None = None,
) -> Path:
    """Save `model` as a torch.export program with a dynamic batch dim; reload and run it once."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the .pt2 suffix on the temp name: torch.export.save warns on other suffixes.
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp.pt2")
    try:
        import torch

        # As for ONNX, trace at batch 2 so the batch dim is not specialised to 1.
        example2 = tuple(torch.cat([t, t], dim=0) for t in example)
        batch = torch.export.Dim("batch")
        program = torch.export.export(model.eval(), example2,
                                      dynamic_shapes=tuple({0: batch} for _ in example))
        torch.export.save(program, str(tmp))
        _validate(tmp, example)
        os.replace(tmp, out_path)
    except ExportError as e:  # a validation finding: say which export it was
        raise ExportError(f"torch {precision} export failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - any export failure is a failed artifact
        raise ExportError(f"torch {precision} export failed: {one_line(e)}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _validate(path: Path, example: tuple[Any, ...]) -> None:
    """The saved program must load and run at batch 4."""
    import torch

    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        out = module(*(torch.cat([t] * 4, dim=0) for t in example))
    first = torch.utils._pytree.tree_leaves(out)[0]
    if first.shape[0] != 4:
        raise ExportError(f"batch dim is not dynamic (batch 4 gave {tuple(first.shape)})")
