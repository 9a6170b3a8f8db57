// Per-call timeouts hold whatever the batching does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

const SLACK_MS = 100

let batched: InstanceType<typeof Engine>
let serial: InstanceType<typeof Engine>

beforeAll(async () => {
  batched = await engineWithModel({ maxBatchSize: 8 })
  serial = await engineWithModel({ maxBatchSize: 1 })
})
afterAll(async () => {
  await batched?.shutdown()
  await serial?.shutdown()
})

// The model keeps counting for hundreds of tokens.
const endless = { model: MODEL, prompt: '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', maxTokens: 4000 }

async function timed(engine: InstanceType<typeof Engine>, timeoutMs: number | undefined, request = endless) {
  const started = performance.now()
  const result = await drain(engine.generate(request, timeoutMs === undefined ? {} : { timeoutMs }))
  return { ...result, elapsed: performance.now() - started }
}

async function waitUntil(predicate: () => boolean, ms: number) {
  const until = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > until) throw new Error('condition not reached')
    await new Promise((r) => setImmediate(r))
  }
}

describe.each([
  ['batching on', () => batched],
  ['batching off', () => serial],
])('timeouts with %s', (_, engine) => {
  it('rejects with TimeoutError / TIMEOUT within 100 ms of the deadline', async () => {
    const r = await timed(engine(), 400)
    expect(r.error).toMatchObject({ name: 'TimeoutError', code: 'TIMEOUT' })
    expect(r.elapsed).toBeGreaterThanOrEqual(400 - 5)
    expect(r.elapsed).toBeLessThan(400 + SLACK_MS)
  })

  it('the timed-out request leaves the worker', async () => {
    await timed(engine(), 300)
    await waitUntil(() => engine().stats().models[0].activeRequests === 0, 5_000)
  })
})

describe('timeouts and batch mates', () => {
  it('each request times out on its own deadline, whatever the others have', async () => {
    const runs = await Promise.all([timed(batched, 300), timed(batched, 700), timed(batched, 1500), timed(batched, undefined, { ...endless, maxTokens: 30 })])
    for (const [i, ms] of [300, 700, 1500].entries()) {
      expect(runs[i].error).toMatchObject({ code: 'TIMEOUT' })
      expect(runs[i].elapsed).toBeLessThan(ms + SLACK_MS)
      expect(runs[i].elapsed).toBeGreaterThanOrEqual(ms - 5)
    }
    expect(runs[3].error).toBeUndefined()
    expect(runs[3].final?.finishReason).toBe('length')
  })

  it('a short timeout fires while the worker is inside a long step of another request', async () => {
    // A long prompt keeps the worker in prefill for seconds (one step per chunk).
    const longPrompt = 'The quick brown fox jumps over the lazy dog. '.repeat(100)
    const blocker = drain(serial.generate({ model: MODEL, prompt: longPrompt, maxTokens: 1 }))
    await waitUntil(() => serial.stats().models[0].activeRequests === 1, 5_000)
    const r = await timed(serial, 250, { ...endless, maxTokens: 5 })
    expect(r.error).toMatchObject({ code: 'TIMEOUT' })
    expect(r.elapsed).toBeLessThan(250 + SLACK_MS)
    expect((await blocker).final).toBeDefined()
  })

  it('tokens produced before the deadline are delivered before the TimeoutError', async () => {
    const r = await timed(batched, 1500)
    expect(r.error).toMatchObject({ code: 'TIMEOUT' })
    expect(r.ids.length).toBeGreaterThan(0)
    const solo = await drain(batched.generate({ ...endless, maxTokens: r.ids.length }))
    expect(r.ids).toEqual(solo.ids)
  })

  it('the engine default timeout applies to calls without timeoutMs', async () => {
    const engine = await engineWithModel({ defaultTimeoutMs: 300 })
    try {
      const r = await timed(engine, undefined)
      expect(r.error).toMatchObject({ code: 'TIMEOUT' })
      expect(r.elapsed).toBeLessThan(300 + SLACK_MS)
    } finally {
      await engine.shutdown()
    }
  })
})
