// The incident this project exists for: after 318 good requests a worker
// blocks forever. The watchdog notices within hangTimeoutMs, ends its requests
// with WORKER_HUNG, abandons the thread and starts a fresh worker.
// Needs the test build (cargo feature `fault-injection`), which `npm test` makes.
const GOOD_REQUESTS = 318
// Each good request makes exactly one decode step (the first token comes from prefill).
process.env.MLX_SERVING_FAULT = `hang:${GOOD_REQUESTS + 1}`

import { afterAll, beforeAll, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

const HANG_TIMEOUT_MS = 1500

let engine: InstanceType<typeof Engine>
let loaded = 0 // MLX's active bytes with one model loaded (device memory on a GPU)

beforeAll(async () => {
  engine = await engineWithModel({ hangTimeoutMs: HANG_TIMEOUT_MS })
  loaded = engine.stats().memory.activeBytes
})
afterAll(async () => {
  await engine?.shutdown({ drainTimeoutMs: 1000 })
})

// A generous ceiling for "it never finished" (318 short requests take ~30 s on
// an idle 2-core machine, several times that on a busy one), not a speed target.
it(`a worker that hangs after ${GOOD_REQUESTS} good requests is detected and replaced`, { timeout: 900_000 }, async () => {
  for (let i = 0; i < GOOD_REQUESTS; i++) {
    const r = await drain(engine.generate({ model: MODEL, prompt: `Request ${i}:`, maxTokens: 2 }))
    expect(r.error).toBeUndefined()
    expect(r.ids).toHaveLength(2)
  }
  expect(engine.stats().models[0].restarts).toBe(0)

  const started = Date.now()
  const hung = await drain(engine.generate({ model: MODEL, prompt: 'The unlucky one:', maxTokens: 2 }))
  const noticedAfter = Date.now() - started
  expect(hung.error).toMatchObject({ code: 'WORKER_HUNG' })
  expect(hung.ids).toHaveLength(1) // the prefill token arrived before the hang
  expect(noticedAfter).toBeGreaterThanOrEqual(HANG_TIMEOUT_MS)
  // Noticed by the watchdog, not by some much later timeout of ours (the
  // engine has no other deadline here; this bound only says "it was noticed").
  expect(noticedAfter).toBeLessThan(HANG_TIMEOUT_MS + 30_000)

  const after = await drain(engine.generate({ model: MODEL, prompt: 'Still alive?', maxTokens: 8 }))
  expect(after.error).toBeUndefined()
  expect(after.ids).toHaveLength(8)
  expect(engine.stats().models[0]).toMatchObject({ state: 'ready', restarts: 1, abandonedWorkers: 1, activeRequests: 0, queuedRequests: 0 })
  // A hung thread cannot be unwound from outside, so what it holds (its
  // model's weights and its cache) stays allocated: at most one more model,
  // never more. docs/reliability.md says so.
  const now = engine.stats().memory.activeBytes
  console.log(`MLX active memory: ${(loaded / 2 ** 20).toFixed(1)} MiB with the first worker, ${(now / 2 ** 20).toFixed(1)} MiB beside the abandoned one`)
  expect(now).toBeLessThan(2.5 * loaded)
})

it('an idle worker is never declared hung', async () => {
  // What is tested is the passage of time itself: an idle worker stays idle
  // for twice the hang timeout (the watchdog looks every hangTimeoutMs / 4)
  // and is not replaced. No event can stand in for that wait.
  const idleSince = Date.now()
  while (Date.now() - idleSince < HANG_TIMEOUT_MS * 2) await new Promise((r) => setTimeout(r, 100))
  expect(engine.stats().models[0]).toMatchObject({ state: 'ready', restarts: 1, activeRequests: 0 })
})
