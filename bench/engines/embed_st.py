"""One round of the embedding benchmark on sentence-transformers (PyTorch, f32;
on the CPU with as many threads as the machine has cores, or on the GPU with
BENCH_EMBED_DEVICE=cuda): sentences/s at a batch of 1, 32 and 256 inputs per
call, the latency of one short query, and the embeddings of the first
`check` sentences (for the driver's agreement check). Prints one JSON line.
Driven by bench/embeddings.mjs, in the environment
`scripts/setup.sh --embeddings-bench` makes (.data/embeddings/venv)."""

import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

w = json.loads(sys.argv[1])
device = os.environ.get("BENCH_EMBED_DEVICE", "cpu")
torch.set_num_threads(os.cpu_count() or 1)
# float32 explicitly: newer transformers load a checkpoint in its stored dtype.
model = SentenceTransformer(w["model"], device=device, model_kwargs={"torch_dtype": torch.float32})
sentences = w["sentences"]
with torch.inference_mode():
    model.encode(sentences[:64], batch_size=64)
    throughput = {}
    for b in w["batches"]:
        calls = max(1, len(sentences) // b)
        started = time.perf_counter()
        for c in range(calls):
            model.encode(sentences[c * b : c * b + b], batch_size=b)
        throughput[str(b)] = calls * b / (time.perf_counter() - started)
    latencies = []
    for _ in range(w["queries"]):
        started = time.perf_counter()
        model.encode([w["query"]], batch_size=1)
        latencies.append((time.perf_counter() - started) * 1000)
    check = model.encode(sentences[: w["check"]], batch_size=32).tolist()
latencies.sort()
where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
print(json.dumps({"throughput": throughput, "queryMs": latencies[len(latencies) // 2], "threads": torch.get_num_threads(), "torch": torch.__version__, "device": where, "check": check}))
