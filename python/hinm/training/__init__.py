"""N:M and HiNM training recipes (torch): decaying pruning mask, decaying sparse structure, SR-STE.

    recipe = hinm.training.MaskDecay(model, "1:8", schedule="exp", decay=1e-3,
                                     finetune_steps=500, total_steps=5000)
    for x, y in data:
        loss_fn(model(x), y).backward(); optimizer.step(); optimizer.zero_grad(); recipe.step()
    hard = recipe.finalize()          # {"fc1.weight": hard-masked weight, ...}, biases untouched
    packed = recipe.compressed()      # {"fc1.weight": NMTensor / HiNMTensor with exactly those masks}
"""

from .recipes import SRSTE, MaskDecay, StructureDecay
from ._masks import compress_scores, layer_mask, weight_matrix
from .schedules import beta, structure_frames, structure_patterns

__all__ = ["MaskDecay", "StructureDecay", "SRSTE", "beta", "structure_frames", "structure_patterns",
           "layer_mask", "weight_matrix", "compress_scores"]
