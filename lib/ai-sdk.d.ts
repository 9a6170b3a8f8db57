/**
 * An AI SDK provider over an in-process {@link Engine} (no HTTP):
 * `generateText` and `streamText` from the `ai` package run on a local model,
 * with streaming, `abortSignal`, usage and finish reasons, and `embed` /
 * `embedMany` on a local embedding model.
 *
 * @example
 * ```js
 * import { generateText } from 'ai'
 * import { createMlxServing } from 'mlx-serving/ai-sdk'
 * const mlx = createMlxServing(engine) // an Engine with a model loaded as 'smol'
 * const { text } = await generateText({ model: mlx('smol'), prompt: 'Write a haiku.' })
 * ```
 *
 * @module mlx-serving/ai-sdk
 */
import type { EmbeddingModelV4, LanguageModelV4 } from '@ai-sdk/provider'
import type { Engine } from './index.js'

/** Settings of a language model made by the provider. */
export interface MlxServingModelSettings {
  /** Deadline of each call in ms (TIMEOUT past it). Default: the engine's. */
  timeoutMs?: number
}

/**
 * Settings of an embedding model; each can also be given per call as
 * `providerOptions: { 'mlx-serving': { ... } }`.
 */
export interface MlxServingEmbeddingSettings extends MlxServingModelSettings {
  /** One of the model's named prompts (e.g. 'query' or 'document' for EmbeddingGemma); see `EmbedRequest.prompt`. */
  prompt?: string
  /** Text put before every value instead of a named prompt. */
  promptText?: string
  /** L2-normalize the vectors. Default: as the model does. */
  normalize?: boolean
  /** Truncate values longer than the model reads (default true); false: CONTEXT_OVERFLOW. */
  truncate?: boolean
}

/** What `createMlxServing` returns: call it with a model id to get a language model. */
export interface MlxServingProvider {
  /** A language model for the model loaded into the engine as `modelId`. */
  (modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  /** The same as calling the provider. */
  languageModel(modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  /**
   * An embedding model (for `embed` / `embedMany` of the `ai` package) for the
   * embedding model loaded into the engine as `modelId`.
   */
  embeddingModel(modelId: string, settings?: MlxServingEmbeddingSettings): EmbeddingModelV4
  /** The same as `embeddingModel` (the AI SDK's older name). */
  textEmbeddingModel(modelId: string, settings?: MlxServingEmbeddingSettings): EmbeddingModelV4
  /** The AI SDK provider specification implemented. */
  readonly specificationVersion: 'v4'
}

/**
 * An AI SDK provider over an in-process Engine: `generateText` / `streamText`
 * from the `ai` package run on a local model, and `embed` / `embedMany` on a
 * local embedding model, with abort and usage; `generateObject` /
 * `streamObject` (and `Output.object`) get JSON that is valid under their
 * schema, by constrained decoding; `tools` (with `toolChoice`, multi-step)
 * get calls whose input matches each tool's schema. A JSON response format
 * together with tools the model may call constrains the calls only (a
 * warning says so). `defaults` apply to every model it makes. Throws a
 * TypeError unless `engine` is an {@link Engine}.
 */
export declare function createMlxServing(engine: Engine, defaults?: MlxServingModelSettings): MlxServingProvider

/**
 * The language model the provider returns (`@ai-sdk/provider`'s
 * `LanguageModelV4`). Text in, text out: tools, files and JSON response
 * formats are reported as `unsupported` warnings, never silently dropped.
 */
export declare class MlxServingLanguageModel implements LanguageModelV4 {
  /** The AI SDK specification implemented. */
  readonly specificationVersion: 'v4'
  /** The provider's name. */
  readonly provider: 'mlx-serving'
  /** The engine's id of the model. */
  readonly modelId: string
  /** None: the model takes no URLs. */
  readonly supportedUrls: Record<string, RegExp[]>
  /** Runs a whole generation (`generateText`). */
  doGenerate: LanguageModelV4['doGenerate']
  /** Streams a generation (`streamText`); cancelling the stream stops it in the worker. */
  doStream: LanguageModelV4['doStream']
}

/** The embedding model `provider.embeddingModel(modelId)` returns: values are embedded by `engine.embed`. */
export declare class MlxServingEmbeddingModel implements EmbeddingModelV4 {
  /** The AI SDK specification implemented. */
  readonly specificationVersion: 'v4'
  /** The provider's name. */
  readonly provider: 'mlx-serving'
  /** The engine's id of the model. */
  readonly modelId: string
  /** 65536: the engine's limit per call. */
  readonly maxEmbeddingsPerCall: number
  /** True: concurrent calls are batched together in the model's worker. */
  readonly supportsParallelCalls: true
  /** Embeds the call's values (`embed`, `embedMany`) with `engine.embed`. */
  doEmbed: EmbeddingModelV4['doEmbed']
}
