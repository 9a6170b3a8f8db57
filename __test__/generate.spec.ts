import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, engineWithModel, MODEL } from './helpers'

let engine: Awaited<ReturnType<typeof engineWithModel>>

beforeAll(async () => {
  engine = await engineWithModel()
})
afterAll(async () => {
  await engine?.shutdown()
})

describe('generate', () => {
  it('answers a question from the real model', async () => {
    const { text, final } = await drain(engine.generate({ model: MODEL, messages: ask('What is the capital of France?'), maxTokens: 24 }))
    expect(text).toMatch(/Paris/)
    expect(final?.finishReason).toBe('stop')
  })

  it('greedy output is deterministic', async () => {
    const request = { model: MODEL, messages: ask('Write a haiku about the sea.'), maxTokens: 40 }
    const a = await drain(engine.generate(request))
    const b = await drain(engine.generate(request))
    expect(a.ids.length).toBeGreaterThan(5)
    expect(b.ids).toEqual(a.ids)
    expect(b.text).toEqual(a.text)
  })

  it('the same seed gives the same sampled output, another seed another', async () => {
    const request = { model: MODEL, prompt: 'Once upon a time', maxTokens: 32, temperature: 1.2, topP: 0.95, seed: 42 }
    const a = await drain(engine.generate(request))
    const b = await drain(engine.generate(request))
    const c = await drain(engine.generate({ ...request, seed: 43 }))
    expect(b.ids).toEqual(a.ids)
    expect(c.ids).not.toEqual(a.ids)
  })

  it('respects maxTokens and reports finishReason length', async () => {
    const { ids, final } = await drain(engine.generate({ model: MODEL, prompt: 'The numbers from one to fifty are: one, two,', maxTokens: 7 }))
    expect(ids).toHaveLength(7)
    expect(final?.finishReason).toBe('length')
  })

  it('maxTokens 0 ends at once with no tokens', async () => {
    const { chunks, final } = await drain(engine.generate({ model: MODEL, prompt: 'Hello', maxTokens: 0 }))
    expect(chunks).toHaveLength(0)
    expect(final?.finishReason).toBe('length')
    expect(final?.usage.completionTokens).toBe(0)
  })

  it('usage counts the prompt and every delivered token', async () => {
    const messages = ask('Name three colors.')
    const { ids, final } = await drain(engine.generate({ model: MODEL, messages, maxTokens: 30 }))
    const promptIds = engine.tokenize(MODEL, engine.applyChatTemplate(MODEL, messages))
    expect(final?.usage.promptTokens).toBe(promptIds.length)
    expect(final?.usage.completionTokens).toBe(ids.length)
    expect(final?.timings.ttftMs).toBeGreaterThan(0)
    expect(final?.timings.tokensPerSecond).toBeGreaterThan(0)
  })

  it('a stop string cuts the text exactly before it', async () => {
    const request = { model: MODEL, prompt: 'The numbers from one to fifty are: one, two, three,', maxTokens: 40 }
    const free = await drain(engine.generate(request))
    // Pick a stop string from the middle of the free-running answer.
    const at = free.text.indexOf(' six')
    expect(at).toBeGreaterThan(0)
    const stopped = await drain(engine.generate({ ...request, stop: [' six', 'never appears'] }))
    expect(stopped.text).toBe(free.text.slice(0, at))
    expect(stopped.final?.finishReason).toBe('stop')
    expect(stopped.text).not.toContain(' six')
  })

  it('ends on the end-of-turn token with finishReason stop', async () => {
    const { text, final } = await drain(engine.generate({ model: MODEL, messages: ask('Say hi.'), maxTokens: 200 }))
    expect(final?.finishReason).toBe('stop')
    expect(text).not.toContain('<|im_end|>')
  })

  it('streams chunks whose text concatenates to the detokenized ids', async () => {
    const { text, ids, chunks } = await drain(engine.generate({ model: MODEL, messages: ask('Say something in French and Japanese.'), maxTokens: 48 }))
    expect(chunks.length).toBeGreaterThan(1)
    expect(text).toBe(engine.detokenize(MODEL, ids))
  })

  it('collect() reads a whole generation', async () => {
    const done = await engine.generate({ model: MODEL, messages: ask('What is 2+2?'), maxTokens: 16 }).collect()
    expect(done.text.length).toBeGreaterThan(0)
    expect(done.usage.completionTokens).toBe(done.tokenIds.length)
  })
})
