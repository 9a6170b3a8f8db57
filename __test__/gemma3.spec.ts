// Gemma 3 270M (GGUF Q4_K_M: a SentencePiece vocabulary of 262144 pieces,
// sliding-window attention on five layers of six, q/k norms, GeGLU, tied
// output) against llama.cpp (node-llama-cpp) on the same file, judged as
// reference.ts says. Runs when `scripts/setup.sh --gemma3` has fetched the
// model (253 MB).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, Engine } from './helpers'
import { describeAgreement, INT8, Reference } from './reference'

const GEMMA_PATH = path.resolve(__dirname, '..', 'models', 'gemma-3-270m-q4_k_m.gguf')
const MODEL = 'gemma3'
const GREEDY_TOKENS = 24
const BOS = 2
/** `gemma3.attention.sliding_window` of this file. */
const WINDOW = 512

let engine: InstanceType<typeof Engine>
let reference: Reference

/** A prompt of about 700 tokens (more than the window) whose continuation depends on what it lists. */
function longPrompt() {
  const colors = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'black', 'white']
  const animals = ['fox', 'owl', 'cat', 'horse', 'whale', 'frog', 'bear', 'crow', 'goat']
  const cities = ['Paris', 'Lima', 'Oslo', 'Cairo', 'Tokyo', 'Quito', 'Perth', 'Dakar', 'Riga', 'Hanoi', 'Bern']
  const lines = []
  for (let i = 1; i <= 56; i++) lines.push(`Item ${i}: the ${colors[(i * 5) % 8]} ${animals[(i * 7) % 9]} lives in ${cities[(i * 3) % 11]}.`)
  return `${lines.join('\n')}\nItem 57: the`
}

describe.skipIf(!fs.existsSync(GEMMA_PATH))('gemma3 (Gemma 3 270M Q4_K_M) against llama.cpp', () => {
  beforeAll(async () => {
    engine = await Engine.create({ maxBatchSize: 4 })
    const info = await engine.loadModel({ id: MODEL, path: GEMMA_PATH })
    expect(info).toMatchObject({
      format: 'gguf',
      architecture: 'gemma3',
      quantization: 'Q4_K_M',
      layers: 18,
      hiddenSize: 640,
      heads: 4,
      kvHeads: 1,
      vocabSize: 262144,
      hasChatTemplate: false,
    })
    expect(info.tensorTypes).toEqual(['F32', 'Q5_0', 'Q8_0', 'Q4_K', 'Q6_K'])
    reference = await Reference.load(GEMMA_PATH, 1024)
  })
  afterAll(async () => {
    await reference?.dispose()
    await engine?.shutdown()
  })

  const texts = [
    'The capital of France is',
    "def f(x):\n    return x**2  # 12345\n\n\tI'll say Grüße, 日本語, 😀 DON'T",
    '  leading  spaces,   runs of    them\n\n\nand newlines\r\n trailing  ',
    'Numbers 3.14159 and 1,000,000; dates 2024-12-31; ½ ⅔ ①',
    'ÆØÅ Ελληνικά русский العربية हिन्दी 한국어 <start_of_turn>user\nhi<end_of_turn>\n',
    'zzzzzzzzzzzzzzzzzzzz aaaaaaaaa ............ ----',
  ]

  it.each(texts.map((t, i) => [i, t] as const))('text %i tokenizes like llama.cpp (BOS first) and decodes back', (_, text) => {
    const ids = engine.tokenize(MODEL, text)
    expect(ids).toEqual([BOS, ...reference.tokenize(text)])
    expect(engine.detokenize(MODEL, ids.slice(1))).toBe(text)
  })

  it('has no chat template, so messages are refused with a clear error and prompts work', async () => {
    let code: string | undefined
    let message = ''
    try {
      const r = await drain(engine.generate({ model: MODEL, messages: ask('hi'), maxTokens: 2 }))
      code = r.error?.code
      message = r.error?.message ?? ''
    } catch (e) {
      code = (e as { code?: string }).code
      message = (e as Error).message
    }
    expect(code).toBe('INVALID_ARGUMENT')
    expect(message).toContain('no chat template')
  })

  const prompts = [
    'The days of the week are Monday, Tuesday, Wednesday,',
    'Here is a short poem about the sea:\n',
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    'Question: What is 17 plus 25?\nAnswer:',
  ]
  const alone: number[][] = []

  it.each(prompts.map((p, i) => [i, p] as const))(`prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens, but for near-ties of the reference`, async (index, prompt) => {
    const promptIds = engine.tokenize(MODEL, prompt)
    const { ids, final, error } = await drain(engine.generate({ model: MODEL, prompt, maxTokens: GREEDY_TOKENS }))
    expect(error).toBeUndefined()
    alone[index] = ids
    const agreement = await reference.compareGreedy(promptIds, ids, final?.finishReason === 'stop', INT8)
    console.log(describeAgreement(`gemma3 prompt ${index}`, agreement))
  })

  it('the same prompts batched together give the same greedy tokens as alone', async () => {
    expect(alone.length).toBe(prompts.length)
    const together = await Promise.all(prompts.map((prompt) => drain(engine.generate({ model: MODEL, prompt, maxTokens: GREEDY_TOKENS }))))
    for (let i = 0; i < prompts.length; i++) {
      expect(together[i].error).toBeUndefined()
      expect(together[i].ids).toEqual(alone[i])
    }
  })

  it('a prompt longer than the sliding window: greedy tokens equal llama.cpp\'s', async () => {
    const prompt = longPrompt()
    const promptIds = engine.tokenize(MODEL, prompt)
    expect(promptIds.length).toBeGreaterThan(WINDOW + 100)
    const { ids, final, error } = await drain(engine.generate({ model: MODEL, prompt, maxTokens: 12 }))
    expect(error).toBeUndefined()
    const agreement = await reference.compareGreedy(promptIds, ids, final?.finishReason === 'stop', INT8)
    console.log(describeAgreement(`gemma3 ${promptIds.length}-token prompt`, agreement))
  })
})
