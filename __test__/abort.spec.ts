// AbortSignal, return() and throw(): the request stops in the worker, every
// token produced before is delivered, and the abort listener is always removed.
import { getEventListeners, setMaxListeners } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL, waitFor } from './helpers'

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 4 })
})
afterAll(async () => {
  await engine?.shutdown()
})

const counting = { model: MODEL, prompt: '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', maxTokens: 400 }
const listeners = (signal: AbortSignal) => getEventListeners(signal, 'abort').length

function idle() {
  return waitFor(() => engine.stats().models[0].activeRequests + engine.stats().models[0].queuedRequests === 0, 'the worker lets go of every request')
}

describe('AbortSignal', () => {
  it('abort rejects with AbortError / ABORTED after the tokens produced before it', async () => {
    const controller = new AbortController()
    const stream = engine.generate(counting, { signal: controller.signal })
    const seen: number[] = []
    for (let i = 0; i < 4; i++) seen.push(...((await stream.next()).value as { tokenIds: number[] }).tokenIds)
    controller.abort()
    const rest = await drain(stream)
    expect(rest.error).toMatchObject({ name: 'AbortError', code: 'ABORTED' })
    const all = [...seen, ...rest.ids]
    const solo = await drain(engine.generate({ ...counting, maxTokens: all.length }))
    expect(all).toEqual(solo.ids)
    expect(await stream.next()).toEqual({ done: true, value: undefined })
    await idle()
  })

  it('the worker drops an aborted request within a step and frees its slot', async () => {
    const small = await engineWithModel({ maxBatchSize: 1 })
    try {
      const controller = new AbortController()
      const first = small.generate(counting, { signal: controller.signal })
      await first.next()
      controller.abort()
      // The only batch slot is free again: the next request completes.
      const next = await drain(small.generate({ model: MODEL, prompt: 'Hi', maxTokens: 3 }))
      expect(next.final).toBeDefined()
      await expect(drain(first)).resolves.toMatchObject({ error: { code: 'ABORTED' } })
      // Nothing is left in the worker: the aborted request is not generating on.
      expect(small.stats().models[0]).toMatchObject({ activeRequests: 0, queuedRequests: 0 })
    } finally {
      await small.shutdown()
    }
  })

  it('an already aborted signal rejects before any work', async () => {
    const before = engine.stats().models[0].tokensGenerated
    const signal = AbortSignal.abort(new Error('caller gave up'))
    const r = await drain(engine.generate(counting, { signal }))
    expect(r.error).toMatchObject({ name: 'AbortError', code: 'ABORTED', message: 'caller gave up' })
    expect(r.chunks).toHaveLength(0)
    expect(engine.stats().models[0].tokensGenerated).toBe(before)
    expect(listeners(signal)).toBe(0)
  })

  describe('the abort listener is removed on every path', () => {
    it('completion', async () => {
      const { signal } = new AbortController()
      await drain(engine.generate({ ...counting, maxTokens: 3 }, { signal }))
      expect(listeners(signal)).toBe(0)
    })
    it('error', async () => {
      const { signal } = new AbortController()
      const r = await drain(engine.generate({ model: MODEL, prompt: 'x '.repeat(9000), maxTokens: 3 }, { signal }))
      expect(r.error).toMatchObject({ code: 'CONTEXT_OVERFLOW' })
      expect(listeners(signal)).toBe(0)
    })
    it('timeout', async () => {
      const { signal } = new AbortController()
      const r = await drain(engine.generate(counting, { signal, timeoutMs: 200 }))
      expect(r.error).toMatchObject({ code: 'TIMEOUT' })
      expect(listeners(signal)).toBe(0)
    })
    it('abort', async () => {
      const controller = new AbortController()
      const stream = engine.generate(counting, { signal: controller.signal })
      await stream.next()
      controller.abort()
      await drain(stream)
      expect(listeners(controller.signal)).toBe(0)
    })
    it('return()', async () => {
      const { signal } = new AbortController()
      for await (const chunk of engine.generate(counting, { signal })) {
        expect(chunk.done).toBe(false)
        break
      }
      expect(listeners(signal)).toBe(0)
      await idle()
    })
    it('throw()', async () => {
      const { signal } = new AbortController()
      const stream = engine.generate(counting, { signal })
      await stream.next()
      await expect(stream.throw(new Error('consumer failed'))).rejects.toThrow('consumer failed')
      expect(listeners(signal)).toBe(0)
      await idle()
    })
    it('synchronous validation error', () => {
      const { signal } = new AbortController()
      expect(() => engine.generate({ model: MODEL, prompt: 'x', maxTokens: -1 }, { signal })).toThrow()
      expect(listeners(signal)).toBe(0)
    })
  })

  it('thousands of calls on one long-lived signal leave no listener behind', { timeout: 1_200_000 }, async () => {
    const { signal } = new AbortController()
    setMaxListeners(100, signal) // 50 calls in flight at a time, one listener each
    for (let i = 0; i < 2000; i += 50) {
      await Promise.all(
        Array.from({ length: 50 }, (_, j) => drain(engine.generate({ model: MODEL, prompt: `Hello ${i + j}`, maxTokens: (i + j) % 7 === 0 ? 1 : 0 }, { signal }))),
      )
    }
    expect(listeners(signal)).toBe(0)
  })
})

describe('return() and throw()', () => {
  it('return() cancels the request in the worker and frees its slot', async () => {
    const small = await engineWithModel({ maxBatchSize: 1 })
    try {
      const first = small.generate(counting)
      await first.next()
      await first.return(undefined)
      expect(await first.next()).toEqual({ done: true, value: undefined })
      const next = await drain(small.generate({ model: MODEL, prompt: 'Hi', maxTokens: 3 }))
      expect(next.final).toBeDefined()
      expect(small.stats().models[0].activeRequests).toBe(0)
    } finally {
      await small.shutdown()
    }
  })

  it('throw() cancels the request in the worker, frees its slot and rethrows', async () => {
    const small = await engineWithModel({ maxBatchSize: 1 })
    try {
      const first = small.generate(counting)
      await first.next()
      const reason = new Error('stop it')
      await expect(first.throw(reason)).rejects.toBe(reason)
      const next = await drain(small.generate({ model: MODEL, prompt: 'Hi', maxTokens: 3 }))
      expect(next.final).toBeDefined()
      expect(small.stats().models[0].activeRequests).toBe(0)
    } finally {
      await small.shutdown()
    }
  })
})
