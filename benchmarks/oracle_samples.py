"""The oracle (the exact object through the model's renderer, 2x2 rays per pixel) against the stored
targets of the first 6 test objects, at 24 and 64 samples per ray: docs/notes/vqvae-lifting-and-colour.md, section 1."""
import time, torch
torch.set_num_threads(2)
from sar3d_core.data import MultiViewDataset
from sar3d_core.vqvae_eval import oracle_render
from sar3d_core.world import make_object
from sar3d_core.metrics import psnr, mask_iou
ds = MultiViewDataset("/root/.cache/sar3d/proc_test_64", size=64, target_views=range(12))
for S in (24, 64):
    ps, ious = [], []
    t = time.time()
    for i in range(6):
        it = ds[i]
        ref = oracle_render(make_object(int(it["seed"])), it["target_c"], 64, S, 0.45, 2)
        ps.append(float(psnr(ref["rgb"][0].clamp(0, 1), it["target_rgb"]).mean()))
        ious.append(float(mask_iou(ref["mask"][0], it["target_mask"]).mean()))
    print(S, sum(ps)/6, sum(ious)/6, (time.time()-t)/6, "s/object")
