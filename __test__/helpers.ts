import path from 'node:path'
import { createRequire } from 'node:module'
import type * as Api from '../lib/index.js'

const require = createRequire(import.meta.url)
export const { Engine, ErrorCode, MlxServingError, shutdownOnSignals } = require('../lib/index.js') as typeof Api
export type { Chunk, Completion, Generation } from '../lib/index.js'

export const MODEL_PATH = path.resolve(__dirname, '..', 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
export const MODEL = 'smollm2'

/** An engine with the default model loaded. */
export async function engineWithModel(options?: ConstructorParameters<typeof Engine>[0]) {
  const engine = await Engine.create(options)
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  return engine
}

/**
 * Loads a model whose quantized matrices take f32 activations (the exact mode,
 * `MLX_SERVING_ACTIVATIONS=f32`, read at load) instead of the default int8:
 * for comparisons of the model's arithmetic with a reference implementation.
 */
export async function loadExact(engine: InstanceType<typeof Engine>, spec: Api.ModelSpec) {
  const before = process.env.MLX_SERVING_ACTIVATIONS
  process.env.MLX_SERVING_ACTIVATIONS = 'f32'
  try {
    return await engine.loadModel(spec)
  } finally {
    if (before === undefined) delete process.env.MLX_SERVING_ACTIVATIONS
    else process.env.MLX_SERVING_ACTIVATIONS = before
  }
}

export function ask(content: string) {
  return [{ role: 'user' as const, content }]
}

/** Collects a stream into token chunks and its final chunk, or the error that ended it. */
export async function drain(stream: AsyncIterable<Api.Chunk>) {
  const chunks: Api.TokenChunk[] = []
  let final: Api.FinalChunk | undefined
  let error: (Error & { code?: string }) | undefined
  try {
    for await (const chunk of stream) {
      if (chunk.done) {
        if (final) throw new Error('two final chunks')
        final = chunk
      } else {
        if (final) throw new Error('a token after the final chunk')
        chunks.push(chunk)
      }
    }
  } catch (e) {
    error = e as Error & { code?: string }
  }
  return {
    chunks,
    final,
    error,
    text: chunks.map((c) => c.text).join(''),
    ids: chunks.flatMap((c) => c.tokenIds),
  }
}

/**
 * Waits for the stream's first token chunk (the event a test needs before it
 * acts on a running request), and drains the rest. `ids` include the first chunk's.
 */
export async function afterFirstToken(stream: AsyncIterator<Api.Chunk> & AsyncIterable<Api.Chunk>) {
  const first = await stream.next()
  if (first.done || first.value.done) throw new Error('the stream ended before its first token')
  const firstIds = first.value.tokenIds
  return {
    firstIds,
    rest: drain(stream).then((r) => ({ ...r, ids: [...firstIds, ...r.ids] })),
  }
}

/**
 * Polls `predicate` (every few ms) until it holds. `ceilingMs` is only a bound
 * for "it never happened", far above what any machine needs.
 */
export async function waitFor(predicate: () => boolean, what: string, ceilingMs = 120_000) {
  const until = Date.now() + ceilingMs
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`${what}: not reached within ${ceilingMs} ms`)
    await new Promise((r) => setTimeout(r, 5))
  }
}
