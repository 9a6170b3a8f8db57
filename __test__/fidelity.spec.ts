// Our tokenizer and greedy decoding against llama.cpp (through node-llama-cpp)
// on the same GGUF file.
//
// Tokenization must be identical. Greedy decoding is compared token by token
// and must be identical too, except where llama.cpp itself is undecided: both
// engines' arithmetic depends on the CPU's kernels (llama.cpp rounds
// activations to 8 bits for its quantized dot products and picks other kernels
// on AVX-512; so do we and OpenBLAS), so where the model's two best tokens are
// nearly tied either may win. At a difference we accept our token only if
// llama.cpp's own log-probabilities put it within NEAR_TIE_NATS of its choice;
// then llama.cpp continues from our token, so the rest is still compared.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { getLlama, type Llama, type LlamaModel, type LlamaContext, type Token } from 'node-llama-cpp'
import { ask, drain, engineWithModel, MODEL, MODEL_PATH } from './helpers'

const GREEDY_TOKENS = 32
/**
 * How close (in natural log-probability, i.e. in logits) two tokens must be in
 * llama.cpp's own distribution to count as a tie. llama.cpp rounds each
 * activation block to 8 bits before its dot products, which moves a logit by
 * up to about 1% of the logits' spread (here 20-30), so ties closer than half
 * a nat are decided by rounding; one measured divergence was 0.27 nats.
 */
const NEAR_TIE_NATS = 0.5
/** More near-ties than this in one prompt is no longer "the reference is undecided". */
const MAX_NEAR_TIES = 3

let engine: Awaited<ReturnType<typeof engineWithModel>>
let llama: Llama
let reference: LlamaModel
let context: LlamaContext
const report: Record<string, unknown>[] = []

beforeAll(async () => {
  engine = await engineWithModel()
  llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never })
  reference = await llama.loadModel({ modelPath: MODEL_PATH })
  // Same arithmetic where it matters: an f32 KV cache and plain attention
  // (llama.cpp's defaults store K/V and accumulate attention in f16).
  context = await reference.createContext({
    contextSize: 1024,
    sequences: 1,
    // One thread: llama.cpp's threads wait for each other by spinning, which
    // slows it down many times over on a busy machine with few cores.
    threads: 1,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  })
})
afterAll(async () => {
  if (report.length) {
    fs.mkdirSync(path.join(__dirname, '..', 'target'), { recursive: true })
    fs.writeFileSync(path.join(__dirname, '..', 'target', 'fidelity.json'), JSON.stringify(report, null, 2))
  }
  await context?.dispose()
  await reference?.dispose()
  await llama?.dispose()
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

/** llama.cpp's greedy continuation of `tokens` (up to `count` tokens, or through an end-of-generation token). */
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

/** llama.cpp's next-token distribution after `tokens`, as probabilities by token id. */
async function llamaDistribution(tokens: number[]): Promise<Map<Token, number>> {
  const sequence = context.getSequence()
  try {
    for await (const step of sequence.evaluateWithMetadata(tokens as Token[], { probabilities: true }, { temperature: 0, yieldEogToken: true })) return step.probabilities
    throw new Error('llama.cpp produced no token')
  } finally {
    sequence.dispose()
  }
}

/** An end-of-turn where our stream stopped: we do not deliver that token, llama.cpp yields it. */
const END = -1

describe('fidelity with llama.cpp', () => {
  it.each(tokenizationPrompts.map((m, i) => [i, m] as const))('prompt %i tokenizes like llama.cpp', (_, messages) => {
    const text = engine.applyChatTemplate(MODEL, messages)
    const ours = engine.tokenize(MODEL, text)
    const theirs = Array.from(reference.tokenize(text, true)) as unknown as number[]
    expect(ours).toEqual(theirs)
  })

  it.each(prompts.map((m, i) => [i, m] as const))(
    `prompt %i: greedy tokens equal llama.cpp's for ${GREEDY_TOKENS} tokens, but for near-ties of the reference`,
    async (index, messages) => {
      const promptIds = engine.tokenize(MODEL, engine.applyChatTemplate(MODEL, messages))
      const { ids, final, error } = await drain(engine.generate({ model: MODEL, messages, maxTokens: GREEDY_TOKENS }))
      expect(error).toBeUndefined()
      const ours = final?.finishReason === 'stop' ? [...ids, END] : ids

      const nearTies: { at: number; ours: number; theirs: number; gapNats: number }[] = []
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
          // A difference: acceptable only where llama.cpp itself is nearly undecided.
          const probs = await llamaDistribution([...promptIds, ...ours.slice(0, at)])
          const mineProb = mine === END ? Math.max(...[...probs].filter(([t]) => reference.isEogToken(t)).map(([, p]) => p)) : (probs.get(mine as Token) ?? 0)
          const gapNats = Math.log(probs.get(token as Token)!) - Math.log(mineProb)
          expect(gapNats, `token ${at}: we chose ${mine}, llama.cpp ${token}, ${gapNats.toFixed(3)} nats apart in llama.cpp's distribution`).toBeLessThanOrEqual(NEAR_TIE_NATS)
          nearTies.push({ at, ours: mine, theirs: token, gapNats: +gapNats.toFixed(4) })
          at++
          break
        }
        // llama.cpp continues from our token after a near-tie; it never stops short without a difference.
        expect(at, 'llama.cpp produced fewer tokens than asked').toBeGreaterThan(before)
      }
      report.push({ prompt: index, tokens: ours.length, agreed, nearTies })
      console.log(`fidelity prompt ${index}: ${agreed}/${ours.length} tokens equal${nearTies.length ? `; near-ties of llama.cpp at ${nearTies.map((t) => `${t.at} (${t.gapNats} nats)`).join(', ')}` : ''}`)
      expect(nearTies.length).toBeLessThanOrEqual(MAX_NEAR_TIES)
      expect(ours.length).toBeGreaterThan(0)
    },
  )

  it('tokenizes multilingual text like llama.cpp', () => {
    const text = 'Grüße, 日本語, Русский, مرحبا, 😀🎉 and 12345 digits   spaced\n\nlines'
    expect(engine.tokenize(MODEL, text)).toEqual(Array.from(reference.tokenize(text, true)))
  })
})
