import type { LanguageModelV4 } from '@ai-sdk/provider'
import type { Engine } from './index.js'

export interface MlxServingModelSettings {
  /** Deadline of each call in ms (TIMEOUT past it). Default: the engine's. */
  timeoutMs?: number
}

export interface MlxServingProvider {
  /** A language model for the model loaded into the engine as `modelId`. */
  (modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  languageModel(modelId: string, settings?: MlxServingModelSettings): LanguageModelV4
  readonly specificationVersion: 'v4'
}

/**
 * An AI SDK provider over an in-process Engine: `generateText` / `streamText`
 * from the `ai` package run on a local model, with abort and usage;
 * `generateObject` / `streamObject` (and `Output.object`) get JSON that is
 * valid under their schema, by constrained decoding; `tools` (with
 * `toolChoice`, multi-step) get calls whose input matches each tool's schema.
 * A JSON response format together with tools the model may call constrains
 * the calls only (a warning says so).
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
