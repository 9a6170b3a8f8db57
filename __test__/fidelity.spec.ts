// Our tokenizer and greedy decoding against llama.cpp (through node-llama-cpp)
// on the same GGUF file; reference.ts says how differences are judged.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, engineWithModel, loadExact, MODEL, MODEL_PATH } from './helpers'
import { describeAgreement, EXACT, INT8, Reference, type Agreement } from './reference'

const GREEDY_TOKENS = 32

let engine: Awaited<ReturnType<typeof engineWithModel>>
let reference: Reference
const report: ({ prompt: number; mode: string } & Agreement)[] = []
/** The default model (int8 activations) and the same file in the exact mode (f32 activations). */
const EXACT_MODEL = 'smollm2-exact'
const modes = [
  ['int8 activations (the default)', MODEL, INT8],
  ['f32 activations', EXACT_MODEL, EXACT],
] as const

beforeAll(async () => {
  engine = await engineWithModel()
  await loadExact(engine, { id: EXACT_MODEL, path: MODEL_PATH })
  reference = await Reference.load(MODEL_PATH)
})
afterAll(async () => {
  if (report.length) {
    fs.mkdirSync(path.join(__dirname, '..', 'target'), { recursive: true })
    fs.writeFileSync(path.join(__dirname, '..', 'target', 'fidelity.json'), JSON.stringify(report, null, 2))
  }
  await reference?.dispose()
  await engine?.shutdown()
})

const prompts = [
  ask('Explain recursion to a five year old.'),
  ask('List three prime numbers greater than 100.'),
  ask('What is photosynthesis?'),
  ask('Give me a recipe for pancakes.'),
  ask('How do I reverse a string in Python?'),
  ask('What is machine learning?'),
  ask('What is the capital of France?'),
]
const tokenizationPrompts = [
  ...prompts,
  [
    { role: 'system' as const, content: 'You answer in one sentence.' },
    { role: 'user' as const, content: 'Why is the ocean salty? Ünïcödé, 日本, emoji 🎉.' },
  ],
]

describe('fidelity with llama.cpp', () => {
  it.each(tokenizationPrompts.map((m, i) => [i, m] as const))('prompt %i tokenizes like llama.cpp', (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    expect(engine.tokenize(MODEL, text)).toEqual(reference.tokenize(text))
  })

  describe.each(modes)('%s', (mode, model, tolerance) => {
    it.each(prompts.map((m, i) => [i, m] as const))(
      `prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens, but for near-ties of the reference`,
      async (index, messages) => {
        const promptIds = engine.tokenize(model, engine.applyChatTemplate(model, messages))
        const { ids, final, error } = await drain(engine.generate({ model, messages, maxTokens: GREEDY_TOKENS }))
        expect(error).toBeUndefined()
        const agreement = await reference.compareGreedy(promptIds, ids, final?.finishReason === 'stop', tolerance)
        report.push({ prompt: index, mode, ...agreement })
        console.log(describeAgreement(`fidelity (${mode}) prompt ${index}`, agreement))
        expect(agreement.tokens).toBeGreaterThan(0)
      },
    )
  })

  it('tokenizes multilingual text like llama.cpp', () => {
    const text = 'Grüße, 日本語, Русский, مرحبا, 😀🎉 and 12345 digits   spaced\n\nlines'
    expect(engine.tokenize(MODEL, text)).toEqual(reference.tokenize(text))
  })
})
