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

/** Rejects if `promise` takes longer than `ms`. */
export async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}
