// Per-call timeouts hold whatever the batching does.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL, waitFor } from './helpers'

// How late a timeout may fire. The engine's timer fires within a few ms on an
// idle machine, but these tests must pass on a slow, busy one, so the bound
// only separates "fired on its own deadline" from the failures it guards
// against (waiting for a batch mate's deadline, for the end of a long step, or
// for the request to finish): the deadlines below are further apart than this.
const LATE_MS = 400

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

describe.each([
  ['batching on', () => batched],
  ['batching off', () => serial],
])('timeouts with %s', (_, engine) => {
  it('rejects with TimeoutError / TIMEOUT at the deadline', async () => {
    const r = await timed(engine(), 400)
    expect(r.error).toMatchObject({ name: 'TimeoutError', code: 'TIMEOUT' })
    expect(r.elapsed).toBeGreaterThanOrEqual(400 - 5)
    expect(r.elapsed).toBeLessThan(400 + LATE_MS)
  })

  it('the timed-out request leaves the worker', async () => {
    await timed(engine(), 300)
    await waitFor(() => engine().stats().models[0].activeRequests === 0, 'the request leaves the worker')
  })
})

describe('timeouts and batch mates', () => {
  it('each request times out on its own deadline, whatever the others have', async () => {
    const deadlines = [300, 300 + 2 * LATE_MS, 300 + 4 * LATE_MS]
    const runs = await Promise.all([...deadlines.map((ms) => timed(batched, ms)), timed(batched, undefined, { ...endless, maxTokens: 30 })])
    for (const [i, ms] of deadlines.entries()) {
      expect(runs[i].error).toMatchObject({ code: 'TIMEOUT' })
      expect(runs[i].elapsed).toBeLessThan(ms + LATE_MS)
      expect(runs[i].elapsed).toBeGreaterThanOrEqual(ms - 5)
    }
    expect(runs[3].error).toBeUndefined()
    expect(runs[3].final?.finishReason).toBe('length')
  })

  it('a short timeout fires while the worker is inside a long step of another request', async (ctx) => {
    // A long prompt keeps the worker in prefill for seconds (one step per chunk)
    // on the CPU. On a GPU the same prefill is one step of a few ms, and no step
    // of this model can be made to outlast the deadline, so there is nothing to
    // observe (docs/gpu.md).
    if (serial.stats().device.backend !== 'cpu') ctx.skip()
    const longPrompt = 'The quick brown fox jumps over the lazy dog. '.repeat(100)
    const blocker = drain(serial.generate({ model: MODEL, prompt: longPrompt, maxTokens: 1 }))
    await waitFor(() => serial.stats().models[0].activeRequests === 1, 'the long prompt is in the worker')
    const r = await timed(serial, 250, { ...endless, maxTokens: 5 })
    expect(r.error).toMatchObject({ code: 'TIMEOUT' })
    expect(r.elapsed).toBeLessThan(250 + LATE_MS)
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
      expect(r.elapsed).toBeLessThan(300 + LATE_MS)
    } finally {
      await engine.shutdown()
    }
  })
})
