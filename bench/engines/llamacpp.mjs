// node-llama-cpp (llama.cpp) on the same GGUF and token ids. Prints results as JSON.
import os from 'node:os'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { getLlama } from 'node-llama-cpp'
import { median, streamsPlan } from './common.mjs'

const work = JSON.parse(process.argv[2])
const threads = os.availableParallelism()
// BENCH_LLAMA_GPU=cuda: llama.cpp's CUDA build (every layer on the GPU); the CPU otherwise.
const gpu = process.env.BENCH_LLAMA_GPU || false
const llama = await getLlama({ gpu, build: 'never', logLevel: 'error' })
const model = await llama.loadModel({ modelPath: work.model, ...(gpu ? { gpuLayers: 'max' } : {}) })
// One sequence's context must hold the longest first-token prompt.
const longest = Math.max(...Object.values(work.ttftPrompts).map((ids) => ids.length))

async function withContext(sequences, fn) {
  // node-llama-cpp sizes the context per sequence: each stream needs its prompt and 64 tokens.
  const contextSize = sequences === 1 ? longest + 256 : 1024
  const context = await model.createContext({ sequences, contextSize, threads, batchSize: 512 })
  try {
    return await fn(context)
  } finally {
    await context.dispose()
  }
}

async function run(sequence, ids, maxTokens) {
  const started = performance.now()
  let first
  let last
  let n = 0
  for await (const token of sequence.evaluate(ids, { temperature: 0 })) {
    n++
    last = performance.now()
    first ??= last
    if (n >= maxTokens) break
  }
  await sequence.clearHistory()
  return { ttftMs: first - started, decodeTps: n > 1 ? (n - 1) / ((last - first) / 1000) : 0, tokens: n }
}

const single = await withContext(1, async (context) => {
  const sequence = context.getSequence()
  await run(sequence, work.decodePrompt, 8)
  const decode = []
  for (let i = 0; i < work.repeats; i++) decode.push((await run(sequence, work.decodePrompt, work.decodeTokens)).decodeTps)
  const ttft = {}
  for (const [name, ids] of Object.entries(work.ttftPrompts)) {
    const times = []
    for (let i = 0; i < work.repeats; i++) times.push((await run(sequence, ids, 1)).ttftMs)
    ttft[name] = median(times)
  }
  return { decodeTps: median(decode), ttftMs: ttft }
})

const aggregate = {}
let eventLoopP99Ms
for (const n of work.streams) {
  await withContext(n, async (context) => {
    const sequences = Array.from({ length: n }, () => context.getSequence())
    const plans = streamsPlan(work, n)
    const histogram = monitorEventLoopDelay({ resolution: 1 })
    histogram.enable()
    const started = performance.now()
    const results = await Promise.all(plans.map((ids, i) => run(sequences[i], ids, work.streamTokens)))
    const seconds = (performance.now() - started) / 1000
    histogram.disable()
    if (n === 8) eventLoopP99Ms = histogram.percentile(99) / 1e6
    aggregate[n] = results.reduce((a, r) => a + r.tokens, 0) / seconds
  })
  // What is measured so far, in case a larger context takes the process down.
  console.log(JSON.stringify({ ...single, aggregateTps: aggregate, partial: true }))
}
await model.dispose()
await llama.dispose()
console.log(JSON.stringify({ ...single, aggregateTps: aggregate, eventLoopP99Ms, peakRssMiB: process.resourceUsage().maxRSS / 1024, threads, gpu: llama.gpu }))
