"""Evaluation: benchmarks (gso, synthetic, folder), image and geometry metrics, reports.

Submodules: ``metrics`` (PSNR, SSIM, mask IoU), ``lpips`` (LPIPS-VGG from local
weights), ``geometry`` (Chamfer, F-score, normal consistency, volume IoU),
``align`` (none / ICP with scale), ``protocol`` (cameras, renders, scoring one
prediction), ``benchmarks``, ``runner`` and ``report``. Nothing is imported
here, so ``import o3dcli.eval`` is free; docs/eval-protocol.md states the protocol.
"""
