// Our tokenizer and greedy decoding against llama.cpp (through node-llama-cpp)
// on the same GGUF file.
import os from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { getLlama, type Llama, type LlamaModel, type LlamaContext } from 'node-llama-cpp'
import { ask, drain, engineWithModel, MODEL, MODEL_PATH } from './helpers'

const GREEDY_TOKENS = 32

let engine: Awaited<ReturnType<typeof engineWithModel>>
let llama: Llama
let reference: LlamaModel
let context: LlamaContext

beforeAll(async () => {
  engine = await engineWithModel()
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never })
  reference = await llama.loadModel({ modelPath: MODEL_PATH })
  // Same arithmetic where it matters: an f32 KV cache and plain attention
  // (llama.cpp's defaults store K/V and accumulate attention in f16).
  context = await reference.createContext({
    contextSize: 1024,
    sequences: 1,
    threads: os.availableParallelism(),
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  })
})
afterAll(async () => {
  await context?.dispose()
  await reference?.dispose()
  await llama?.dispose()
  await engine?.shutdown()
})

// llama.cpp rounds activations to 8 bits before its quantized dot products;
// we keep them in f32. Where the model's two best tokens are within ~0.1 logit
// ("What is the capital of France?" at its first token, for one) the two
// engines may pick differently; these prompts have no such near-tie early on.
const prompts = [
  ask('Explain recursion to a five year old.'),
  ask('List three prime numbers greater than 100.'),
  ask('What is photosynthesis?'),
  ask('Give me a recipe for pancakes.'),
  ask('How do I reverse a string in Python?'),
  ask('What is machine learning?'),
]
const tokenizationPrompts = [
  ...prompts,
  [
    { role: 'system' as const, content: 'You answer in one sentence.' },
    { role: 'user' as const, content: 'Why is the ocean salty? Ünïcödé, 日本, emoji 🎉.' },
  ],
]

async function llamaGreedy(tokens: number[], count: number) {
  const sequence = context.getSequence()
  try {
    const out: number[] = []
    for await (const token of sequence.evaluate(tokens as never, { temperature: 0 })) {
      out.push(token as unknown as number)
      if (out.length >= count || reference.isEogToken(token)) break
    }
    return out
  } finally {
    sequence.dispose()
  }
}

describe('fidelity with llama.cpp', () => {
  it.each(tokenizationPrompts.map((m, i) => [i, m] as const))('prompt %i tokenizes like llama.cpp', (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    const ours = engine.tokenize(MODEL, text)
    const theirs = Array.from(reference.tokenize(text, true)) as unknown as number[]
    expect(ours).toEqual(theirs)
  })

  it.each(prompts.map((m, i) => [i, m] as const))(`prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens`, async (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    const promptIds = engine.tokenize(MODEL, text)
    const theirs = await llamaGreedy(promptIds, GREEDY_TOKENS)
    const { ids, final } = await drain(engine.generate({ model: MODEL, messages, maxTokens: GREEDY_TOKENS }))
    // We do not deliver the end-of-turn token; llama.cpp yields it.
    const theirsWithoutEnd = theirs.filter((t) => !reference.isEogToken(t as never))
    expect(theirs.length).toBe(GREEDY_TOKENS)
    expect(ids).toEqual(theirsWithoutEnd)
    expect(final?.finishReason).toBe('length')
  })

  it('tokenizes multilingual text like llama.cpp', () => {
    const text = 'Grüße, 日本語, Русский, مرحبا, 😀🎉 and 12345 digits   spaced\n\nlines'
    expect(engine.tokenize(MODEL, text)).toEqual(Array.from(reference.tokenize(text, true)))
  })
})
