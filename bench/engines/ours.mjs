// This engine through Node. Reads the workload (JSON) on argv[2], prints results as JSON.
import { createRequire } from 'node:module'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { median, streamsPlan } from './common.mjs'

const require = createRequire(import.meta.url)
const { Engine } = require('../../lib/index.js')
const work = JSON.parse(process.argv[2])

const engine = await Engine.create({ maxBatchSize: Math.max(...work.streams) })
await engine.loadModel({ id: 'm', path: work.model })
const prompt = (ids) => engine.detokenize('m', ids)

async function run(ids, maxTokens) {
  const started = performance.now()
  let first
  let last
  let n = 0
  for await (const chunk of engine.generate({ model: 'm', prompt: prompt(ids), maxTokens })) {
    if (chunk.done) break
    n += chunk.tokenIds.length
    last = performance.now()
    first ??= last
  }
  return { ttftMs: first - started, decodeTps: n > 1 ? (n - 1) / ((last - first) / 1000) : 0, tokens: n }
}

await run(work.decodePrompt, 8) // warm-up
const decode = []
for (let i = 0; i < work.repeats; i++) decode.push((await run(work.decodePrompt, work.decodeTokens)).decodeTps)
if (process.env.BENCH_DECODE_ONLY) {
  // The binding-overhead pairing needs only this figure.
  await engine.shutdown()
  console.log(JSON.stringify({ decodeTps: median(decode) }))
  process.exit(0)
}
const ttft = {}
for (const [name, ids] of Object.entries(work.ttftPrompts)) {
  const times = []
  for (let i = 0; i < work.repeats; i++) times.push((await run(ids, 1)).ttftMs)
  ttft[name] = median(times)
}
const aggregate = {}
let eventLoopP99Ms
for (const n of work.streams) {
  const plans = streamsPlan(work, n)
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
  const during = await streamGaps(work.longPrompt)
  smooth = {
    promptTokens: work.longPrompt.length,
    medianGapMs: quantile(alone.gaps, 0.5),
    p99GapAloneMs: quantile(alone.gaps, 0.99),
    p99GapDuringMs: quantile(during.gaps, 0.99),
    longTtftMs: during.longTtftMs,
  }
}
await engine.shutdown()
console.log(JSON.stringify({ decodeTps: median(decode), ttftMs: ttft, aggregateTps: aggregate, eventLoopP99Ms, smooth, peakRssMiB: process.resourceUsage().maxRSS / 1024 }))
