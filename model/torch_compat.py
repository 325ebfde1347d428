"""Import torchvision with the CPU build of torch.

The only torchvision wheel that matches torch 2.13.0 (0.28.0) is built against CUDA; its
compiled operators do not load with the CPU torch, and `import torchvision` then fails with
"operator torchvision::nms does not exist", because its Python side registers fake kernels
for the operators nms and qnms unconditionally. We declare those two operator schemas (no
kernels) before importing torchvision. Models, weights and transforms work; the compiled
detection ops (torchvision.ops.nms, roi_align, ...) stay unavailable, and nothing here uses them.
On a machine where torchvision's operators do load, this module changes nothing.

Import torchvision through this module: `from model.torch_compat import torchvision`.
"""
import torch


def _declare_missing_ops():
    if hasattr(torch.ops.torchvision, "nms"):
        return None
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return lib


_LIB = _declare_missing_ops()  # the declarations live as long as this object
import torchvision  # noqa: E402  (must come after the declarations)

__all__ = ["torchvision"]
