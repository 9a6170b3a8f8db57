// Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M: Q5_0, Q8_0, Q4_K, Q6_K and F32
// tensors, q/k/v biases, NeoX RoPE, untied output) against llama.cpp
// (node-llama-cpp) on the same file: prompt tokenization must be identical;
// greedy tokens too, except at llama.cpp's own near-ties (judged as in
// fidelity.spec.ts: our token within NEAR_TIE_NATS of its choice in llama.cpp's
// distribution, after which llama.cpp continues from our token).
// Runs when `scripts/setup.sh --qwen2` has fetched the model (491 MB).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { getLlama, type Llama, type LlamaContext, type LlamaModel, type Token } from 'node-llama-cpp'
import { ask, drain, Engine } from './helpers'

const QWEN_PATH = path.resolve(__dirname, '..', 'models', 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const MODEL = 'qwen2'
const GREEDY_TOKENS = 16
/** See fidelity.spec.ts: llama.cpp's 8-bit activations move logits by up to about half a nat. */
const NEAR_TIE_NATS = 0.5
const MAX_NEAR_TIES = 3
/** An end-of-turn where our stream stopped: we do not deliver that token, llama.cpp yields it. */
const END = -1

let engine: InstanceType<typeof Engine>
let llama: Llama
let reference: LlamaModel
let context: LlamaContext

describe.skipIf(!fs.existsSync(QWEN_PATH))('qwen2 (Qwen2.5-Coder-0.5B Q4_K_M) against llama.cpp', () => {
  beforeAll(async () => {
    engine = await Engine.create()
    const info = await engine.loadModel({ id: MODEL, path: QWEN_PATH })
    expect(info).toMatchObject({ format: 'gguf', architecture: 'qwen2', quantization: 'Q4_K_M', layers: 24, kvHeads: 2 })
    expect(info.tensorTypes).toEqual(['F32', 'Q5_0', 'Q8_0', 'Q4_K', 'Q6_K'])
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never })
    reference = await llama.loadModel({ modelPath: QWEN_PATH })
    context = await reference.createContext({
      contextSize: 512,
      sequences: 1,
      // One thread: llama.cpp's spinning threads crawl on a busy machine with few cores.
      threads: 1,
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

  async function llamaGreedy(tokens: number[], count: number): Promise<number[]> {
    const sequence = context.getSequence()
    try {
      const out: number[] = []
      for await (const token of sequence.evaluate(tokens as Token[], { temperature: 0, yieldEogToken: true })) {
        out.push(token as number)
        if (out.length >= count || reference.isEogToken(token)) break
      }
      return out
    } finally {
      sequence.dispose()
    }
  }

  async function llamaDistribution(tokens: number[]): Promise<Map<Token, number>> {
    const sequence = context.getSequence()
    try {
      for await (const step of sequence.evaluateWithMetadata(tokens as Token[], { probabilities: true }, { temperature: 0, yieldEogToken: true })) return step.probabilities
      throw new Error('llama.cpp produced no token')
    } finally {
      sequence.dispose()
    }
  }

  const prompts = [ask('Write a Python function that reverses a string.'), ask('What does the HTTP status code 404 mean?')]

  it.each(prompts.map((m, i) => [i, m] as const))('prompt %i tokenizes like llama.cpp', (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    expect(text).toContain('<|im_start|>user\n')
    expect(engine.tokenize(MODEL, text)).toEqual(Array.from(reference.tokenize(text, true)))
  })

  it('tokenizes code, digits and multilingual text like llama.cpp', () => {
    const text = "def f(x):\n    return x**2  # 12345\n\n\tI'll say Grüße, 日本語, 😀 DON'T"
    expect(engine.tokenize(MODEL, text)).toEqual(Array.from(reference.tokenize(text, true)))
  })

  it.each(prompts.map((m, i) => [i, m] as const))(`prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens, but for near-ties of the reference`, async (index, messages) => {
    const promptIds = engine.tokenize(MODEL, engine.applyChatTemplate(MODEL, messages))
    const { ids, final, error } = await drain(engine.generate({ model: MODEL, messages, maxTokens: GREEDY_TOKENS }))
    expect(error).toBeUndefined()
    const ours = final?.finishReason === 'stop' ? [...ids, END] : ids
    const nearTies: string[] = []
    let agreed = 0
    let at = 0
    while (at < ours.length) {
      const theirs = await llamaGreedy([...promptIds, ...ours.slice(0, at)], ours.length - at)
      const before = at
      for (const token of theirs) {
        const mine = ours[at]
        if (mine === END ? reference.isEogToken(token as Token) : mine === token) {
          agreed++
          at++
          continue
        }
        const probs = await llamaDistribution([...promptIds, ...ours.slice(0, at)])
        const mineProb = mine === END ? Math.max(...[...probs].filter(([t]) => reference.isEogToken(t)).map(([, p]) => p)) : (probs.get(mine as Token) ?? 0)
        const gapNats = Math.log(probs.get(token as Token)!) - Math.log(mineProb)
        expect(gapNats, `token ${at}: we chose ${mine}, llama.cpp ${token}, ${gapNats.toFixed(3)} nats apart in llama.cpp's distribution`).toBeLessThanOrEqual(NEAR_TIE_NATS)
        nearTies.push(`${at} (${gapNats.toFixed(3)} nats)`)
        at++
        break
      }
      expect(at, 'llama.cpp produced fewer tokens than asked').toBeGreaterThan(before)
    }
    console.log(`qwen2 prompt ${index}: ${agreed}/${ours.length} tokens equal${nearTies.length ? `; near-ties of llama.cpp at ${nearTies.join(', ')}` : ''}`)
    expect(nearTies.length).toBeLessThanOrEqual(MAX_NEAR_TIES)
  })
})
