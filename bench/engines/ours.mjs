// This engine through Node. Reads the workload (JSON) on argv[2], prints results as JSON.
import { createRequire } from 'node:module'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { median, streamsPlan } from './common.mjs'

const require = createRequire(import.meta.url)
const { Engine } = require('../../lib/index.js')
const work = JSON.parse(process.argv[2])

// Every figure but the conversation's is of cold prompts: prefix reuse off.
let engine = await Engine.create({ maxBatchSize: Math.max(...work.streams), prefixCacheMb: 0 })
await engine.loadModel({ id: 'm', path: work.model })
const prompt = (ids) => engine.detokenize('m', ids)

if (process.env.BENCH_SCENARIO === 'conversation') {
  // Turn 2 of a conversation whose turn 1 had a long history: first token
  // with prefix reuse (turn 1 and its answer cached) vs the same prompt cold.
  // Each repeat uses another history, so turn 1 itself is always cold.
  const turn2 = []
  for (let i = 0; i < work.repeats; i++) {
    const history = prompt(work.histories[i]) + '\n\nQuestion: what is this text about?\nAnswer:'
    engine = await reload(engine, 0)
    const answer = await collect(history, 32)
    const next = history + answer.text + '\n\nQuestion: and who is it for?\nAnswer:'
    const cold = await collect(next, 1)
    engine = await reload(engine, 1024)
    await collect(history, 32)
    const warm = await collect(next, 1)
    const reused = engine.stats().models[0].prefixCache.tokensReused
    turn2.push({ historyTokens: work.histories[i].length, turn2Tokens: warm.promptTokens, reused, coldMs: cold.ttftMs, warmMs: warm.ttftMs })
  }
  await engine.shutdown()
  const coldMs = median(turn2.map((t) => t.coldMs))
  const warmMs = median(turn2.map((t) => t.warmMs))
  console.log(JSON.stringify({ conversation: { runs: turn2, coldMs, warmMs, ratio: warmMs / coldMs } }))
  process.exit(0)
}

async function reload(old, prefixCacheMb) {
  await old.shutdown()
  const e = await Engine.create({ prefixCacheMb })
  await e.loadModel({ id: 'm', path: work.model })
  return e
}

async function collect(text, maxTokens) {
  const started = performance.now()
  const r = await engine.generate({ model: 'm', prompt: text, maxTokens }).collect()
  return { text: r.text, promptTokens: r.usage.promptTokens, ttftMs: r.timings.ttftMs ?? performance.now() - started }
}

async function run(ids, maxTokens) {
  const started = performance.now()
  let first
  let last
  let n = 0
  let inFirst = 0
  for await (const chunk of engine.generate({ model: 'm', prompt: prompt(ids), maxTokens })) {
    if (chunk.done) break
    n += chunk.tokenIds.length
    last = performance.now()
    if (first === undefined) [first, inFirst] = [last, n]
  }
  // A chunk may carry several tokens: the rate counts those after the first chunk.
  return { ttftMs: first - started, decodeTps: n > inFirst ? (n - inFirst) / ((last - first) / 1000) : 0, tokens: n }
}

await run(work.decodePrompt, 8) // warm-up
// BENCH_SMOOTH_ONLY=1: only the smooth-stream figures (for A/B runs of the
// interleaving: node bench/engines/ours.mjs WORKLOAD).
const smoothOnly = !!process.env.BENCH_SMOOTH_ONLY
const decode = []
for (let i = 0; i < (smoothOnly ? 0 : work.repeats); i++) decode.push((await run(work.decodePrompt, work.decodeTokens)).decodeTps)
if (process.env.BENCH_DECODE_ONLY) {
  // The binding-overhead pairing needs only this figure.
  await engine.shutdown()
  console.log(JSON.stringify({ decodeTps: median(decode) }))
  process.exit(0)
}
const ttft = {}
for (const [name, ids] of Object.entries(smoothOnly ? {} : work.ttftPrompts)) {
  await run(ids, 1) // untimed: first use of this prompt length's shapes
  const times = []
  for (let i = 0; i < work.repeats; i++) times.push((await run(ids, 1)).ttftMs)
  ttft[name] = median(times)
}
const aggregate = {}
let eventLoopP99Ms
for (const n of smoothOnly ? [] : work.streams) {
  const plans = streamsPlan(work, n)
  // A short untimed round first: MLX's CUDA backend compiles kernels for new shapes on first use.
  await Promise.all(plans.map((ids) => run(ids, 4)))
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  histogram.enable()
  const started = performance.now()
  const results = await Promise.all(plans.map((ids) => run(ids, work.streamTokens)))
  const seconds = (performance.now() - started) / 1000
  histogram.disable()
  if (n === 8) eventLoopP99Ms = histogram.percentile(99) / 1e6
  aggregate[n] = results.reduce((a, r) => a + r.tokens, 0) / seconds
}

// Smooth streams: the inter-token gaps of 8 running streams, on their own and
// while a long prompt arrives and prefills (between their decode steps).
const quantile = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]
async function streamGaps(longIds) {
  const gaps = []
  let tokensSeen = 0
  let recording = !longIds
  let stop = false
  const readers = streamsPlan(work, 8).map(async (ids) => {
    let last
    let n = 0
    for await (const chunk of engine.generate({ model: 'm', prompt: prompt(ids), maxTokens: 4000 })) {
      if (chunk.done || stop) break
      const now = performance.now()
      if (last !== undefined && n >= 2 && recording) gaps.push(now - last)
      last = now
      n++
      tokensSeen++
      if (!longIds && n >= 40) break
    }
  })
  let longTtftMs
  if (longIds) {
    while (tokensSeen < 8 * 3) await new Promise((r) => setTimeout(r, 5))
    recording = true
    longTtftMs = (await run(longIds, 1)).ttftMs
    stop = true
  }
  await Promise.all(readers)
  return { gaps, longTtftMs }
}
let smooth
if (work.longPrompt) {
  const alone = await streamGaps()
  // The long prompt's first token with nothing else running (cold: no prefix reuse).
  const longAloneTtftMs = (await run(work.longPrompt, 1)).ttftMs
  const during = await streamGaps(work.longPrompt)
  smooth = {
    promptTokens: work.longPrompt.length,
    medianGapMs: quantile(alone.gaps, 0.5),
    p99GapAloneMs: quantile(alone.gaps, 0.99),
    p99GapDuringMs: quantile(during.gaps, 0.99),
    longTtftMs: during.longTtftMs,
    longAloneTtftMs,
  }
}
const { memory, device } = engine.stats()
await engine.shutdown()
console.log(
  JSON.stringify({ decodeTps: median(decode), ttftMs: ttft, aggregateTps: aggregate, eventLoopP99Ms, smooth, peakRssMiB: process.resourceUsage().maxRSS / 1024, peakMlxMiB: memory.peakBytes / 2 ** 20, device }),
)
