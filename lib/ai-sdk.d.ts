import type { EmbeddingModelV4, LanguageModelV4 } from '@ai-sdk/provider'
import type { Engine } from './index.js'

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

export interface MlxServingProvider {
  /** A language model for the model loaded into the engine as `modelId`. */
  (modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  languageModel(modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  /**
   * An embedding model (for `embed` / `embedMany` of the `ai` package) for the
   * embedding model loaded into the engine as `modelId`.
   */
  embeddingModel(modelId: string, settings?: MlxServingEmbeddingSettings): EmbeddingModelV4
  /** The same as `embeddingModel` (the AI SDK's older name). */
  textEmbeddingModel(modelId: string, settings?: MlxServingEmbeddingSettings): EmbeddingModelV4
  readonly specificationVersion: 'v4'
}

/**
 * An AI SDK provider over an in-process Engine: `generateText` / `streamText`
 * from the `ai` package run on a local model, and `embed` / `embedMany` on a
 * local embedding model, with abort and usage.
 */
export declare function createMlxServing(engine: Engine, defaults?: MlxServingModelSettings): MlxServingProvider

export declare class MlxServingLanguageModel implements LanguageModelV4 {
  readonly specificationVersion: 'v4'
  readonly provider: 'mlx-serving'
  readonly modelId: string
  readonly supportedUrls: Record<string, RegExp[]>
  doGenerate: LanguageModelV4['doGenerate']
  doStream: LanguageModelV4['doStream']
}

/** The embedding model `provider.embeddingModel(modelId)` returns: values are embedded by `engine.embed`. */
export declare class MlxServingEmbeddingModel implements EmbeddingModelV4 {
  readonly specificationVersion: 'v4'
  readonly provider: 'mlx-serving'
  readonly modelId: string
  /** 65536: the engine's limit per call. */
  readonly maxEmbeddingsPerCall: number
  /** True: concurrent calls are batched together in the model's worker. */
  readonly supportsParallelCalls: true
  doEmbed: EmbeddingModelV4['doEmbed']
}
