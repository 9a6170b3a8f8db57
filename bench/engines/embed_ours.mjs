// One round of the embedding benchmark on this engine: sentences/s at a batch
// of 1, 32 and 256 inputs per call, and the latency of one short query.
// Also returns the embeddings of the first `check` sentences (for the
// driver's agreement check). Prints one JSON line. Driven by bench/embeddings.mjs.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Engine } = require('../../lib/index.js')
const { model, sentences, batches, query, queries, check } = JSON.parse(process.argv[2])

const engine = await Engine.create()
await engine.loadModel({ id: 'm', path: model })
// Warm-up: every shape class once.
await engine.embed({ model: 'm', input: sentences.slice(0, 64) })

const throughput = {}
for (const b of batches) {
  const calls = Math.max(1, Math.floor(sentences.length / b))
  const started = performance.now()
  for (let c = 0; c < calls; c++) await engine.embed({ model: 'm', input: sentences.slice(c * b, c * b + b) })
  throughput[b] = (calls * b) / ((performance.now() - started) / 1000)
}
const latencies = []
for (let i = 0; i < queries; i++) {
  const started = performance.now()
  await engine.embed({ model: 'm', input: query })
  latencies.push(performance.now() - started)
}
latencies.sort((a, b) => a - b)
const { embeddings } = await engine.embed({ model: 'm', input: sentences.slice(0, check) })
const { backend, name } = engine.stats().device
const device = `${name} (${backend})`
await engine.shutdown()
console.log(JSON.stringify({ throughput, queryMs: latencies[Math.floor(latencies.length / 2)], device, check: embeddings.map((e) => Array.from(e)) }))
