// A panic in a worker ends its in-flight requests with WORKER_CRASHED; a fresh
// worker reloads the model and serves what was queued and what comes later.
// Needs the test build (cargo feature `fault-injection`), which `npm test` makes.
process.env.MLX_SERVING_FAULT = 'panic:6' // read once, at the first decode step

import { afterAll, beforeAll, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

let engine: InstanceType<typeof Engine>
let loaded = 0 // MLX's active bytes with the first worker's model loaded (device memory on a GPU)

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 2 })
  loaded = engine.stats().memory.activeBytes
})
afterAll(async () => {
  await engine?.shutdown()
})

it('a panicking worker is replaced without restarting Node, and nothing is lost', async () => {
  const counting = { model: MODEL, prompt: '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', maxTokens: 50 }
  // Two requests decode together and are hit by the panic at decode step 6;
  // the third waits in the queue and must be served by the replacement.
  const [a, b, queued] = await Promise.all([drain(engine.generate(counting)), drain(engine.generate(counting)), drain(engine.generate({ ...counting, maxTokens: 5 }))])
  for (const r of [a, b]) {
    expect(r.error).toMatchObject({ code: 'WORKER_CRASHED', name: 'MlxServingError' })
    expect(r.error!.message).toMatch(/injected fault/)
    expect(r.ids.length).toBeGreaterThan(0) // tokens before the crash were delivered
    expect(r.final).toBeUndefined()
  }
  expect(queued.error).toBeUndefined()
  expect(queued.ids).toHaveLength(5)

  const later = await drain(engine.generate({ ...counting, maxTokens: 10 }))
  expect(later.error).toBeUndefined()
  const stats = engine.stats().models[0]
  expect(stats).toMatchObject({ state: 'ready', restarts: 1, abandonedWorkers: 0, activeRequests: 0, queuedRequests: 0 })
  // The dead worker's weights and cache were freed as its thread unwound: what
  // is held now is one model (the replacement's), not two.
  const now = engine.stats().memory.activeBytes
  console.log(`MLX active memory: ${(loaded / 2 ** 20).toFixed(1)} MiB with the first worker, ${(now / 2 ** 20).toFixed(1)} MiB after its replacement`)
  expect(loaded).toBeGreaterThan(0)
  expect(now).toBeLessThan(1.5 * loaded)
})

it('the replacement computes exactly what the original did', async () => {
  const r = await drain(engine.generate({ model: MODEL, messages: [{ role: 'user', content: 'What is the capital of France?' }], maxTokens: 12 }))
  expect(r.text).toMatch(/Paris/)
})
