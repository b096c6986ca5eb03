"""GPU check of studylib.bench.benchmark.recover_cuda_rng: make a CUDA-graph capture fail, see the default CUDA generator
left unusable, restore it, and draw from it again. Two ways to fail the capture: `sync` (a synchronize inside the
capture, which invalidates it) and `int8` (bitsandbytes LLM.int8(), the format whose failed capture broke the
2026-11-21 benchmark). Run on the GPU machine with the kit's site-packages and the repo on PYTHONPATH:
    PYTHONPATH=/tmp/site:. python3 tools/device/check_rng_restore.py sync|int8
What it printed on the H200 is in check_rng_restore.txt beside this file."""
import sys, torch
from studylib.bench import benchmark
dev = torch.device("cuda")
how = sys.argv[1]
if how == "int8":
    import bitsandbytes as bnb
    lin = bnb.nn.Linear8bitLt(4096, 4096, has_fp16_weights=False, threshold=6.0).to(dev).half()
    x = torch.randn(1, 4096, device=dev, dtype=torch.float16)
    step = lambda: lin(x)
else:
    x = torch.randn(1, 4096, device=dev)
    def step():
        y = x * 2
        torch.cuda.synchronize()  # not allowed while capturing: invalidates the capture
        return y
step(); torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
try:
    with torch.cuda.graph(g):
        step()
    print(how, "capture ok")
except Exception as e:
    print(how, "capture failed:", type(e).__name__, str(e)[:160].replace("\n", " "))
try:
    torch.randn(1, device=dev); torch.cuda.synchronize(); print(how, "rng usable before restore")
except Exception as e:
    print(how, "rng broken before restore:", type(e).__name__, str(e)[:120].replace("\n", " "))
print(how, "recover_cuda_rng ->", benchmark.recover_cuda_rng(dev))
try:
    w = torch.empty(4096, 4096, device=dev, dtype=torch.float16).normal_(0, 0.02); torch.cuda.synchronize()
    print(how, "normal_ after:", "ok", float(w.std()))
except Exception as e:
    print(how, "normal_ after failed:", type(e).__name__, str(e)[:120])
