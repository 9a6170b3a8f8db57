// The AI SDK provider: the real `ai` package's generateText / streamText on
// the real model, in process.
import { createRequire } from 'node:module'
import { generateText, streamText } from 'ai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, engineWithModel, MODEL, waitFor } from './helpers'
import type * as Provider from '../lib/ai-sdk.js'

const require = createRequire(import.meta.url)
const { createMlxServing } = require('../lib/ai-sdk.js') as typeof Provider

let engine: InstanceType<typeof Engine>
let mlx: Provider.MlxServingProvider

beforeAll(async () => {
  engine = await engineWithModel()
  mlx = createMlxServing(engine)
})
afterAll(async () => {
  await engine?.shutdown()
})

const question = 'Name three colours.'
const direct = (maxTokens: number, system?: string) =>
  engine
    .generate({ model: MODEL, messages: [...(system ? [{ role: 'system' as const, content: system }] : []), { role: 'user' as const, content: question }], maxTokens, temperature: 0 })
    .collect()

describe('AI SDK provider', () => {
  it('createMlxServing takes an Engine only, and says what it got instead', () => {
    const got = (value: unknown) => () => createMlxServing(value as InstanceType<typeof Engine>)
    expect(got(undefined)).toThrow(new TypeError('createMlxServing: expected an Engine, got undefined'))
    expect(got({ generate() {} })).toThrow(new TypeError('createMlxServing: expected an Engine, got an object'))
    expect(got(new Map())).toThrow(new TypeError('createMlxServing: expected an Engine, got an instance of Map'))
    expect(got('smollm2')).toThrow(new TypeError('createMlxServing: expected an Engine, got string smollm2'))
    expect(Engine.isEngine(engine)).toBe(true)
  })

  it('generateText runs on the local model, with usage and finish reason', async () => {
    const r = await generateText({ model: mlx(MODEL), prompt: question, maxOutputTokens: 8, temperature: 0 })
    const expected = await direct(8)
    expect(r.text).toBe(expected.text)
    expect(r.finishReason).toBe('length')
    expect(r.usage.outputTokens).toBe(8)
    expect(r.usage.inputTokens).toBe(expected.usage.promptTokens)
  })

  it('streamText streams the same text, with a system prompt', async () => {
    const system = 'You answer briefly.'
    const r = streamText({ model: mlx(MODEL), system, prompt: question, maxOutputTokens: 10, temperature: 0 })
    let text = ''
    for await (const delta of r.textStream) text += delta
    expect(text).toBe((await direct(10, system)).text)
    expect((await r.usage).outputTokens).toBe(10)
  })

  it('an aborted streamText stops the generation in the worker', async () => {
    const controller = new AbortController()
    const before = engine.stats().models[0].tokensGenerated
    const r = streamText({ model: mlx(MODEL), prompt: 'Count from 1 to 1000.', maxOutputTokens: 2000, abortSignal: controller.signal })
    let parts = 0
    // Depending on the `ai` version the stream then ends or rejects; either way the worker lets go.
    await (async () => {
      for await (const _ of r.textStream) if (++parts === 3) controller.abort()
    })().catch(() => {})
    expect(parts).toBeGreaterThanOrEqual(3)
    await waitFor(() => engine.stats().models[0].activeRequests === 0, 'the aborted request leaves the worker')
    // Had the abort not reached the worker, the request would have run to its 2000 tokens.
    expect(engine.stats().models[0].tokensGenerated - before).toBeLessThan(1000)
  })

  it('engine errors reach the caller with their code', async () => {
    await expect(generateText({ model: mlx('not-loaded'), prompt: 'x', maxRetries: 0 })).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' })
  })
})
