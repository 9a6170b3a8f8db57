// Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M: Q5_0, Q8_0, Q4_K, Q6_K and F32
// tensors, q/k/v biases, NeoX RoPE, untied output) against llama.cpp
// (node-llama-cpp) on the same file, judged as reference.ts says.
// Runs when `scripts/setup.sh --qwen2` has fetched the model (491 MB).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, Engine } from './helpers'
import { describeAgreement, INT8, Reference } from './reference'

const QWEN_PATH = path.resolve(__dirname, '..', 'models', 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const MODEL = 'qwen2'
const GREEDY_TOKENS = 16

let engine: InstanceType<typeof Engine>
let reference: Reference

describe.skipIf(!fs.existsSync(QWEN_PATH))('qwen2 (Qwen2.5-Coder-0.5B Q4_K_M) against llama.cpp', () => {
  beforeAll(async () => {
    engine = await Engine.create()
    const info = await engine.loadModel({ id: MODEL, path: QWEN_PATH })
    expect(info).toMatchObject({ format: 'gguf', architecture: 'qwen2', quantization: 'Q4_K_M', layers: 24, kvHeads: 2 })
    expect(info.tensorTypes).toEqual(['F32', 'Q5_0', 'Q8_0', 'Q4_K', 'Q6_K'])
    reference = await Reference.load(QWEN_PATH, 512)
  })
  afterAll(async () => {
    await reference?.dispose()
    await engine?.shutdown()
  })

  const prompts = [ask('Write a Python function that reverses a string.'), ask('What does the HTTP status code 404 mean?')]

  it.each(prompts.map((m, i) => [i, m] as const))('prompt %i tokenizes like llama.cpp', (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    expect(text).toContain('<|im_start|>user\n')
    expect(engine.tokenize(MODEL, text)).toEqual(reference.tokenize(text))
  })

  it('tokenizes code, digits and multilingual text like llama.cpp', () => {
    const text = "def f(x):\n    return x**2  # 12345\n\n\tI'll say Grüße, 日本語, 😀 DON'T"
    expect(engine.tokenize(MODEL, text)).toEqual(reference.tokenize(text))
  })

  it.each(prompts.map((m, i) => [i, m] as const))(`prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens, but for near-ties of the reference`, async (index, messages) => {
    const promptIds = engine.tokenize(MODEL, engine.applyChatTemplate(MODEL, messages))
    const { ids, final, error } = await drain(engine.generate({ model: MODEL, messages, maxTokens: GREEDY_TOKENS }))
    expect(error).toBeUndefined()
    const agreement = await reference.compareGreedy(promptIds, ids, final?.finishReason === 'stop', INT8)
    console.log(describeAgreement(`qwen2 prompt ${index}`, agreement))
  })
})
