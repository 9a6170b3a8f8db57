// Bad input: INVALID_ARGUMENT naming the field, before any work, and nothing
// in flight is harmed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await engineWithModel()
})
afterAll(async () => {
  await engine?.shutdown()
})

const ok = { model: MODEL, prompt: 'Hello' }

const cases: [string, unknown, unknown, RegExp][] = [
  ['request not an object', 'hello', undefined, /^request/],
  ['request null', null, undefined, /^request/],
  ['model missing', { prompt: 'x' }, undefined, /^model/],
  ['model not a string', { model: 42, prompt: 'x' }, undefined, /^model/],
  ['model empty', { model: '', prompt: 'x' }, undefined, /^model/],
  ['model with control characters', { model: 'a\u0000b', prompt: 'x' }, undefined, /^model/],
  ['model id too long', { model: 'm'.repeat(1000), prompt: 'x' }, undefined, /^model/],
  ['prompt and messages both', { ...ok, messages: [{ role: 'user', content: 'x' }] }, undefined, /^prompt/],
  ['neither prompt nor messages', { model: MODEL }, undefined, /^prompt/],
  ['prompt not a string', { model: MODEL, prompt: 12 }, undefined, /^prompt/],
  ['messages not an array', { model: MODEL, messages: 'hi' }, undefined, /^messages/],
  ['messages empty', { model: MODEL, messages: [] }, undefined, /^messages/],
  ['message without content', { model: MODEL, messages: [{ role: 'user' }] }, undefined, /^messages\[0\]\.content/],
  ['message role not a string', { model: MODEL, messages: [{ role: 1, content: 'x' }] }, undefined, /^messages\[0\]\.role/],
  ['negative maxTokens', { ...ok, maxTokens: -1 }, undefined, /^maxTokens/],
  ['fractional maxTokens', { ...ok, maxTokens: 2.5 }, undefined, /^maxTokens/],
  ['maxTokens as a string', { ...ok, maxTokens: '10' }, undefined, /^maxTokens/],
  ['infinite maxTokens', { ...ok, maxTokens: Infinity }, undefined, /^maxTokens/],
  ['NaN temperature', { ...ok, temperature: NaN }, undefined, /^temperature/],
  ['negative temperature', { ...ok, temperature: -0.5 }, undefined, /^temperature/],
  ['topP zero', { ...ok, topP: 0 }, undefined, /^topP/],
  ['topP above one', { ...ok, topP: 1.5 }, undefined, /^topP/],
  ['minP negative', { ...ok, minP: -0.1 }, undefined, /^minP/],
  ['minP above one', { ...ok, minP: 2 }, undefined, /^minP/],
  ['topK fractional', { ...ok, topK: 1.5 }, undefined, /^topK/],
  ['repetitionPenalty zero', { ...ok, repetitionPenalty: 0 }, undefined, /^repetitionPenalty/],
  ['seed negative', { ...ok, seed: -1 }, undefined, /^seed/],
  ['stop not a string', { ...ok, stop: 5 }, undefined, /^stop/],
  ['stop entry not a string', { ...ok, stop: ['a', 3] }, undefined, /^stop\[1\]/],
  ['stop entry empty', { ...ok, stop: [''] }, undefined, /^stop\[0\]/],
  ['too many stop strings', { ...ok, stop: Array.from({ length: 1000 }, (_, i) => `s${i}`) }, undefined, /^stop/],
  ['unknown option', { ...ok, max_tokens: 5 }, undefined, /max_tokens/],
  ['options not an object', ok, 5, /^options/],
  ['timeoutMs negative', ok, { timeoutMs: -5 }, /^timeoutMs/],
  ['timeoutMs NaN', ok, { timeoutMs: NaN }, /^timeoutMs/],
  ['signal not an AbortSignal', ok, { signal: {} }, /^signal/],
]

describe('validation', () => {
  it.each(cases)('%s -> INVALID_ARGUMENT naming the field', (_, request, options, field) => {
    let error: (Error & { code?: string }) | undefined
    try {
      engine.generate(request as never, options as never)
    } catch (e) {
      error = e as Error & { code?: string }
    }
    expect(error).toBeInstanceOf(Error)
    expect(error!.code).toBe('INVALID_ARGUMENT')
    expect(error!.message).toMatch(field)
  })

  it('bad input loses nothing already in flight', async () => {
    const running = drain(engine.generate({ model: MODEL, prompt: '1, 2, 3,', maxTokens: 20 }))
    for (const [, request, options] of cases) {
      expect(() => engine.generate(request as never, options as never)).toThrow()
    }
    const r = await running
    expect(r.error).toBeUndefined()
    expect(r.ids).toHaveLength(20)
  })

  it('engine options are validated too', () => {
    expect(() => new Engine({ maxBatchSize: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/^maxBatchSize/) }))
    expect(() => new Engine({ hangTimeoutMs: -1 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => new Engine({ bogus: 1 } as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })

  it('loadModel and other calls validate their arguments', async () => {
    await expect(engine.loadModel({ id: 5, path: 'x' } as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await expect(engine.loadModel(null as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    expect(() => engine.tokenize(MODEL, 5 as never)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    expect(() => engine.detokenize(MODEL, [-1])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    await expect(engine.shutdown({ drainTimeoutMs: 'soon' } as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  })
})
