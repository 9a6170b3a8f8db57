// llama.cpp (through node-llama-cpp) as the reference for fidelity tests, and
// the token-by-token comparison of our greedy decoding against it.
//
// Tokenization must be identical. Greedy decoding must be identical too,
// except where llama.cpp itself is undecided: both engines' arithmetic depends
// on the CPU's kernels (llama.cpp rounds activations to 8 bits for its
// quantized dot products and picks other kernels on AVX-512; so do OpenBLAS
// and our kernels), so where the model's two best tokens are nearly tied
// either may win. At a difference we accept our token only if llama.cpp's own
// log-probabilities put it within NEAR_TIE_NATS of its choice; llama.cpp then
// continues from our token, so the rest is still compared.
import { expect } from 'vitest'
import { getLlama, type Llama, type LlamaContext, type LlamaModel, type Token } from 'node-llama-cpp'

/**
 * How close (in natural log-probability, i.e. in logits) two tokens must be in
 * llama.cpp's own distribution to count as a tie. llama.cpp rounds each
 * activation block to 8 bits before its dot products, which moves a logit by
 * up to about 1% of the logits' spread (here 20-30), so ties closer than half
 * a nat are decided by rounding; one measured divergence was 0.27 nats.
 */
export const NEAR_TIE_NATS = 0.5
/** More near-ties than this in one prompt is no longer "the reference is undecided". */
export const MAX_NEAR_TIES = 3
/**
 * The same for our default int8 activations: each 32-block of an activation
 * row rounded to 8 bits, as llama.cpp does, but not the same rounding (its
 * scales are f16, its sums kept otherwise), so the two roundings add up. On
 * SmolLM2 the exact mode parts from llama.cpp only at ties under 0.06 nats,
 * int8 at ties up to 0.54 nats (measured on the fidelity prompts).
 */
export const INT8_NEAR_TIE_NATS = 1.0

/** How wide a near-tie may be, and how many of them a prompt may have. */
export interface Tolerance {
  nearTieNats: number
  maxNearTies: number
}
export const EXACT: Tolerance = { nearTieNats: NEAR_TIE_NATS, maxNearTies: MAX_NEAR_TIES }
export const INT8: Tolerance = { nearTieNats: INT8_NEAR_TIE_NATS, maxNearTies: MAX_NEAR_TIES }

/** An end-of-turn where our stream stopped: we do not deliver that token, llama.cpp yields it. */
const END = -1

export interface Agreement {
  tokens: number
  agreed: number
  nearTies: { at: number; ours: number; theirs: number; gapNats: number }[]
}

export class Reference {
  private constructor(
    private readonly llama: Llama,
    readonly model: LlamaModel,
    private readonly context: LlamaContext,
  ) {}

  /**
   * llama.cpp on `path` with the same arithmetic where it matters: an f32 KV
   * cache and plain attention (its defaults store K/V and accumulate attention
   * in f16), and one thread (its threads wait for each other by spinning,
   * which is many times slower on a busy machine with few cores).
   */
  static async load(path: string, contextSize = 1024) {
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never })
    const model = await llama.loadModel({ modelPath: path })
    const context = await model.createContext({
      contextSize,
      sequences: 1,
      threads: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    })
    return new Reference(llama, model, context)
  }

  async dispose() {
    await this.context.dispose()
    await this.model.dispose()
    await this.llama.dispose()
  }

  tokenize(text: string): number[] {
    return Array.from(this.model.tokenize(text, true)) as unknown as number[]
  }

  /** llama.cpp's greedy continuation of `tokens` (up to `count` tokens, or through an end-of-generation token). */
  private async greedy(tokens: number[], count: number): Promise<number[]> {
    const sequence = this.context.getSequence()
    try {
      const out: number[] = []
      for await (const token of sequence.evaluate(tokens as Token[], { temperature: 0, yieldEogToken: true })) {
        out.push(token as number)
        if (out.length >= count || this.model.isEogToken(token)) break
      }
      return out
    } finally {
      sequence.dispose()
    }
  }

  /** llama.cpp's next-token distribution after `tokens`, as probabilities by token id. */
  private async distribution(tokens: number[]): Promise<Map<Token, number>> {
    const sequence = this.context.getSequence()
    try {
      for await (const step of sequence.evaluateWithMetadata(tokens as Token[], { probabilities: true }, { temperature: 0, yieldEogToken: true })) return step.probabilities
      throw new Error('llama.cpp produced no token')
    } finally {
      sequence.dispose()
    }
  }

  /**
   * Compares our greedy tokens `ids` after `promptIds` (and, when our stream
   * stopped at an end of turn, that end) with llama.cpp's, token by token;
   * fails at a difference that is not a near-tie of llama.cpp's, or past
   * MAX_NEAR_TIES of them.
   */
  async compareGreedy(promptIds: number[], ids: number[], stoppedAtEnd: boolean, tolerance: Tolerance = EXACT): Promise<Agreement> {
    const ours = stoppedAtEnd ? [...ids, END] : ids
    const nearTies: Agreement['nearTies'] = []
    let agreed = 0
    let at = 0
    while (at < ours.length) {
      const theirs = await this.greedy([...promptIds, ...ours.slice(0, at)], ours.length - at)
      const before = at
      for (const token of theirs) {
        const mine = ours[at]
        if (mine === END ? this.model.isEogToken(token as Token) : mine === token) {
          agreed++
          at++
          continue
        }
        // A difference: acceptable only where llama.cpp itself is nearly undecided.
        const probs = await this.distribution([...promptIds, ...ours.slice(0, at)])
        const mineProb = mine === END ? Math.max(...[...probs].filter(([t]) => this.model.isEogToken(t)).map(([, p]) => p)) : (probs.get(mine as Token) ?? 0)
        const gapNats = Math.log(probs.get(token as Token)!) - Math.log(mineProb)
        expect(gapNats, `token ${at}: we chose ${mine}, llama.cpp ${token}, ${gapNats.toFixed(3)} nats apart in llama.cpp's distribution`).toBeLessThanOrEqual(tolerance.nearTieNats)
        nearTies.push({ at, ours: mine, theirs: token, gapNats: +gapNats.toFixed(4) })
        at++
        break
      }
      // llama.cpp continues from our token after a near-tie; it never stops short without a difference.
      expect(at, 'llama.cpp produced fewer tokens than asked').toBeGreaterThan(before)
    }
    expect(nearTies.length).toBeLessThanOrEqual(tolerance.maxNearTies)
    return { tokens: ours.length, agreed, nearTies }
  }
}

/** One line for the test log: how many tokens agreed and where near-ties ended a run of agreement. */
export function describeAgreement(label: string, a: Agreement) {
  const ties = a.nearTies.map((t) => `${t.at} (${t.gapNats} nats)`).join(', ')
  return `${label}: ${a.agreed}/${a.tokens} tokens equal${ties ? `; near-ties of llama.cpp at ${ties}` : ''}`
}
