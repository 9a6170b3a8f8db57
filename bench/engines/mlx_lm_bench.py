"""mlx-lm (PyPI) on the converted model and the same token ids. Prints results as JSON."""

import json
import resource
import sys
import time

import mlx.core as mx
from mlx_lm import batch_generate, load, stream_generate
from mlx_lm.sample_utils import make_sampler


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


work = json.loads(sys.argv[1])
model, tokenizer = load(work["mlxModel"])
greedy = make_sampler(temp=0.0)


def run(ids, max_tokens):
    started = time.perf_counter()
    first = last = None
    n = 0
    for response in stream_generate(model, tokenizer, ids, max_tokens=max_tokens, sampler=greedy):
        n += 1
        last = time.perf_counter()
        first = first or last
    return {"ttftMs": (first - started) * 1000, "decodeTps": (n - 1) / (last - first) if n > 1 else 0, "tokens": n}


run(work["decodePrompt"], 8)
decode = [run(work["decodePrompt"], work["decodeTokens"])["decodeTps"] for _ in range(work["repeats"])]
ttft = {}
for name, ids in work["ttftPrompts"].items():
    run(ids, 1)  # untimed: first use of this prompt length's shapes
    ttft[name] = median([run(ids, 1)["ttftMs"] for _ in range(work["repeats"])])
aggregate = {}
for n in work["streams"]:
    prompts = [work["streamPrefixes"][i % len(work["streamPrefixes"])] + work["decodePrompt"] for i in range(n)]
    batch_generate(model, tokenizer, prompts, max_tokens=4)  # untimed: kernels for this batch size
    started = time.perf_counter()
    result = batch_generate(model, tokenizer, prompts, max_tokens=work["streamTokens"], return_token_ids=True)
    seconds = time.perf_counter() - started
    aggregate[str(n)] = sum(len(ids) for ids in result.token_ids) / seconds
print(json.dumps({"decodeTps": median(decode), "ttftMs": ttft, "aggregateTps": aggregate, "peakRssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peakMlxMiB": mx.get_peak_memory() / 2**20}))
