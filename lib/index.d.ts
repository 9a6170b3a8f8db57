/**
 * Local LLM inference on MLX for Node.js: an {@link Engine} loads models and
 * streams completions from them; every error is an {@link MlxServingError}
 * with a stable {@link ErrorCode}.
 *
 * @example
 * ```js
 * const { Engine } = require('mlx-serving')
 * const engine = await Engine.create()
 * await engine.loadModel({ id: 'smol', path: 'models/SmolLM2-135M-Instruct.Q4_1.gguf' })
 * for await (const chunk of engine.generate({ model: 'smol', prompt: 'The sky is', maxTokens: 16 })) {
 *   if (!chunk.done) process.stdout.write(chunk.text)
 * }
 * await engine.shutdown()
 * ```
 *
 * @module mlx-serving
 */

/** Stable error codes: the `code` property of every error this library throws. */
export declare const ErrorCode: {
  /** An option has the wrong type or value; the message names the field. */
  readonly INVALID_ARGUMENT: 'INVALID_ARGUMENT'
  /** No model with that id is loaded (or it is not ready). */
  readonly MODEL_NOT_FOUND: 'MODEL_NOT_FOUND'
  /** The model file is missing, unreadable, corrupt or unsupported; the message says why. */
  readonly MODEL_LOAD_FAILED: 'MODEL_LOAD_FAILED'
  /** The call's `timeoutMs` (or the engine's `defaultTimeoutMs`) passed. Error name: 'TimeoutError'. */
  readonly TIMEOUT: 'TIMEOUT'
  /** The call's AbortSignal fired, or the stream was closed. Error name: 'AbortError'. */
  readonly ABORTED: 'ABORTED'
  /** More than `maxQueued` requests are waiting for the model. */
  readonly QUEUE_FULL: 'QUEUE_FULL'
  /** The engine or the model is shutting down. */
  readonly SHUTTING_DOWN: 'SHUTTING_DOWN'
  /** The prompt (plus `maxTokens`, when given) does not fit the model's context. */
  readonly CONTEXT_OVERFLOW: 'CONTEXT_OVERFLOW'
  /** The worker serving the request panicked; it was replaced, retry. */
  readonly WORKER_CRASHED: 'WORKER_CRASHED'
  /** The worker serving the request stopped making progress; it was replaced, retry. */
  readonly WORKER_HUNG: 'WORKER_HUNG'
  /** A prompt cache file cannot be used: another model's, another format version, truncated or altered. */
  readonly CACHE_INVALID: 'CACHE_INVALID'
  /** A prompt cache file could not be written; the message says why. */
  readonly CACHE_WRITE_FAILED: 'CACHE_WRITE_FAILED'
  /**
   * The request's output grammar (its `responseFormat`, or the tool calls it
   * requires) went past one of llguidance's limits while generating (lexer
   * states, Earley items, fuel per token). The tokens produced before it are
   * delivered first; other requests in the batch go on.
   */
  readonly GRAMMAR_TOO_COMPLEX: 'GRAMMAR_TOO_COMPLEX'
  /** A bug in mlx-serving; please report it. */
  readonly INTERNAL: 'INTERNAL'
}
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Every error this library throws. `name` is 'TimeoutError', 'AbortError' or 'MlxServingError'. */
export declare class MlxServingError extends Error {
  /** Which failure this is; stable across releases, unlike the message. */
  readonly code: ErrorCode
  /** 'TimeoutError' for TIMEOUT, 'AbortError' for ABORTED (as DOM errors name them), else 'MlxServingError'. */
  name: 'TimeoutError' | 'AbortError' | 'MlxServingError'
}

/** Options of `new Engine()` / `Engine.create()`; every one has a default that works. */
export interface EngineOptions {
  /** Sequences decoded together per step (continuous batching). Default 8. */
  maxBatchSize?: number
  /** Requests that may wait per model; past it, generate throws QUEUE_FULL. Default 256. */
  maxQueued?: number
  /** Deadline for calls without `timeoutMs`. Default: none. */
  defaultTimeoutMs?: number
  /** A worker holding work that finishes no step for this long is replaced (WORKER_HUNG). Default 30000; 120000 on a GPU, where a step of a new shape may wait for kernel compilation. */
  hangTimeoutMs?: number
  /**
   * MiB of keys and values each model keeps from recent prompts and finished
   * sequences, so a prompt that starts the same way (a conversation's
   * history, a shared system prompt) prefills only what is new. Least
   * recently used entries go first; at most half of MLX's memory limit.
   * 0 turns it off. Default 256.
   */
  prefixCacheMb?: number
}

/** What `loadModel` loads, and under which id. */
export interface ModelSpec {
  /** Your name for the model, used in `generate({ model })`. */
  id: string
  /**
   * Path to a GGUF file, or to a model directory in the Hugging Face / MLX
   * layout (config.json, model.safetensors or its shards, tokenizer.json):
   * float weights or MLX affine-quantized ones (mlx-lm's `quantization`).
   */
  path: string
  /** Called every ~100 ms while the weights are read, and once at the end. */
  onProgress?: (progress: LoadProgress) => void
  /**
   * How this model's requests decode speculatively unless they say otherwise
   * (their own `speculative`, or `false`). A draft model it names is checked
   * when a request uses it. Loading a loaded model again (same id and path)
   * changes it; `false` removes it.
   */
  speculative?: Speculative | false
}

/**
 * Speculative decoding: the next tokens are guessed and the model verifies
 * all of them in one pass, keeping those it agrees with. The answer is the
 * one plain decoding gives (the same tokens, greedy or sampled with a seed);
 * how many guesses to verify, or none, follows from how often they were
 * right and what a pass over more tokens measured on this machine. Applies
 * while the model decodes one sequence; a batch of several decodes plainly.
 * Under a `responseFormat` each guessed position gets its mask; a request
 * with `tools` decodes plainly.
 *
 * - `prompt_lookup`: guesses are the tokens that followed the latest earlier
 *   occurrence of the last `ngram` tokens (3 by default, then fewer) in the
 *   prompt and answer: rewriting, editing and quoting a given text.
 * - `draft`: a smaller model with the same vocabulary (the id of a loaded
 *   model) drafts them. The model's worker runs its own copy of the draft
 *   model's weights.
 */
export type Speculative =
  | {
      /** Guesses from earlier text of the prompt and answer. */
      type: 'prompt_lookup'
      /** Most tokens guessed per pass, 1-16. Default 10. */
      maxDraft?: number
      /** Tokens matched to find a guess, 1-16. Default 3. */
      ngram?: number
    }
  | {
      /** Guesses from a smaller draft model. */
      type: 'draft'
      /** The id of a loaded model with the same vocabulary. */
      model: string
      /** Most tokens drafted per pass, 1-16. Default 6. */
      maxDraft?: number
    }

/** How far a model's load has read its weights. */
export interface LoadProgress {
  /** Bytes of weights read so far. */
  bytesRead: number
  /** Bytes of weights in all. */
  totalBytes: number
}

/** A loaded model: what `loadModel` resolves with and `modelInfo` returns. */
export interface ModelInfo {
  /** The id given to `loadModel`. */
  id: string
  /** The path given to `loadModel`. */
  path: string
  /** 'gguf'; for a directory 'mlx' (MLX-quantized weights) or 'safetensors' (float weights). */
  format: 'gguf' | 'mlx' | 'safetensors' | (string & {})
  /** The quantization as llama.cpp names it (`general.file_type`, e.g. 'Q4_K_M', 'Q4_1'), else the block type holding most of the weights. */
  quantization: string
  /** The architecture as the file names it: 'llama', 'qwen2', 'qwen3', 'phi3', 'gemma3', ... */
  architecture: string
  /** Number of weights (parameters) in the model. */
  parameters: number
  /** The longest sequence (prompt plus answer) the model takes, in tokens. */
  contextLength: number
  /** Number of tokens in the vocabulary. */
  vocabSize: number
  /** Number of transformer layers. */
  layers: number
  /** Width of the hidden state (embedding size). */
  hiddenSize: number
  /** Attention heads for queries. */
  heads: number
  /** Attention heads for keys and values (fewer than `heads` with grouped-query attention). */
  kvHeads: number
  /** Tensor types present in the file, e.g. `['F32', 'Q4_K', 'Q6_K']`. */
  tensorTypes: string[]
  /** 'quantized' (weights kept 4-/8-bit; the default) or 'dense' (dequantized to f32 at load, `MLX_SERVING_WEIGHTS=dense`). */
  weightFormat: 'dense' | 'quantized'
  /** The dtype the model computes in: 'float32' on the CPU, 'float16' on a GPU (`MLX_SERVING_DTYPE=f32|f16|bf16` overrides). */
  dtype: 'float32' | 'float16' | 'bfloat16'
  /** Whether the model carries a chat template (needed for `messages`; without one, give `prompt`). */
  hasChatTemplate: boolean
  /** Loading in all; on a GPU it includes `warmUpMs`. */
  loadMs: number
  /** Compiling the GPU's kernels at load, before the model counts as loaded (0 on the CPU). */
  warmUpMs: number
  /** Where the model runs: 'cpu', or 'cuda' / 'metal' when the MLX runtime has a GPU. */
  backend: 'cpu' | 'cuda' | 'metal'
  /**
   * What the model serves: 'generation' (`generate`, a GGUF file or a model
   * directory) or 'embedding' (`embed`, a sentence-transformers directory).
   */
  kind: 'generation' | 'embedding'
  /** An embedding model's vector width (the most `dimensions` it takes). */
  dimensions?: number
  /** An embedding model's longest input in tokens, special tokens included (`max_seq_length`); longer inputs are truncated. */
  maxTokens?: number
  /** How an embedding model pools token states into one vector. */
  pooling?: 'mean' | 'cls' | 'max' | 'mean_sqrt_len' | 'weighted_mean' | 'last_token'
  /** Whether an embedding model's vectors are L2-normalized unless `normalize: false` (it ends with a Normalize module). */
  normalized?: boolean
  /** An embedding model's named prompts (`config_sentence_transformers.json`), for `embed({ prompt })`. */
  prompts?: EmbeddingPrompt[]
  /** The prompt an embedding model puts before texts when a call names none. */
  defaultPrompt?: string
}

/** A named prompt of an embedding model, e.g. `{ name: 'query', text: 'task: search result | query: ' }`. */
export interface EmbeddingPrompt {
  /** The name `embed({ prompt })` takes. */
  name: string
  /** The text put before every input. */
  text: string
}

/** What `embed` embeds, and how. */
export interface EmbedRequest {
  /** The id of an embedding model given to `loadModel`. */
  model: string
  /** One text, or several (one vector each, in order). Empty texts are INVALID_ARGUMENT. */
  input: string | string[]
  /**
   * Keep only the first this many dimensions (Matryoshka truncation; then
   * normalized again when `normalize` holds). 1 to the model's `dimensions`.
   */
  dimensions?: number
  /**
   * One of the model's named prompts (`modelInfo().prompts`, e.g. 'query' or
   * 'document' for EmbeddingGemma), put before every text as
   * sentence-transformers' `prompt_name` does. Default: the model's default prompt, if any.
   */
  prompt?: string
  /** Text put before every input instead of a named prompt (sentence-transformers' `prompt`). */
  promptText?: string
  /** L2-normalize the vectors. Default: as the model does (`modelInfo().normalized`). */
  normalize?: boolean
  /**
   * Inputs longer than the model reads (`maxTokens`) are truncated (true, the
   * default, as sentence-transformers does); with false such a call fails with CONTEXT_OVERFLOW.
   */
  truncate?: boolean
}

/** What `embed` resolves with. */
export interface EmbedResult {
  /** One vector per input, in the order of `input`. */
  embeddings: Float32Array[]
  /** What the call read. */
  usage: {
    /** Tokens read over all inputs (prompts and special tokens included). */
    promptTokens: number
  }
}

/**
 * A chat message. An assistant message may carry the tool calls it made
 * (`content` may then be empty or null); a `tool` message answers one call
 * (`toolCallId`). Both reach the model through its own chat template, as
 * Hugging Face's `apply_chat_template` passes them.
 */
export interface ChatMessage {
  /** Who speaks: 'system', 'user', 'assistant', 'tool', or any role the model's template knows. */
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {})
  /** The message's text (may be empty or null for an assistant message that made tool calls). */
  content: string | null
  /** An assistant message's calls (as a `FinalChunk` reported them). */
  toolCalls?: ToolCall[]
  /** A tool message: the id of the call whose result `content` is. */
  toolCallId?: string
}

/**
 * What the output must match; it is constrained token by token (greedy and
 * sampled alike) with llguidance, so it always parses. The end-of-turn token
 * is allowed only where the output is complete; `maxTokens` reached first
 * ends with `finishReason: 'length'` and the text so far. A schema, pattern
 * or grammar that is invalid (or a schema keyword that is not supported) is
 * INVALID_ARGUMENT before any work, naming the problem.
 *
 * JSON is written on one line with `", "` and `": "` between items (set
 * `x-guidance` in the schema for other layouts), and `oneOf` is read as `anyOf`.
 */
export type ResponseFormat =
  | {
      /** JSON valid under `schema` (JSON Schema draft 2020-12, as llguidance supports it). */
      type: 'json_schema'
      /** The schema the output must be valid under. */
      schema: JsonSchema
      /** A label for the schema (OpenAI's `json_schema.name`); not used for decoding. */
      name?: string
    }
  | {
      /** Any JSON object. */
      type: 'json_object'
    }
  | {
      /** Text that the regular expression matches as a whole. */
      type: 'regex'
      /** The regular expression (Rust `regex` syntax). */
      pattern: string
    }
  | {
      /** Text in the language of a Lark grammar. */
      type: 'grammar'
      /** The grammar, in llguidance's dialect: a `start` rule, `%json { ... }` for embedded schemas. */
      lark: string
    }

/** A JSON schema, as an object (or `true` / `false`). */
export type JsonSchema = { [key: string]: unknown } | boolean

/** A function the model may call. */
export interface Tool {
  /** Unique among the request's tools. */
  name: string
  /** What the tool does, for the model (its template shows it). */
  description?: string
  /** The JSON schema of the arguments (an object schema). Default: an object of any properties. */
  parameters?: JsonSchema
}

/**
 * Whether the model calls tools: `'auto'` (the default with tools) lets it
 * answer with text or calls, and once it begins a call the call's grammar
 * applies, so the call parses; `'required'` makes it call at least one tool
 * and `{ name }` that one tool (the whole answer is then the call, its
 * arguments constrained to the tool's `parameters` from the first token);
 * `'none'` answers with text (the tools are not shown to the model).
 */
export type ToolChoice =
  | 'auto'
  | 'none'
  | 'required'
  | {
      /** The tool that must be called: one of the request's `tools`. */
      name: string
    }

/** A call the model made; `arguments` is the JSON text it wrote (it parses, and matches the tool's `parameters`). */
export interface ToolCall {
  /** `call_...` (9 letters or digits for Mistral-family models, whose templates require it). */
  id: string
  /** The tool called: one of the request's `tools`. */
  name: string
  /** The arguments as the JSON text the model wrote (parse it with `JSON.parse`). */
  arguments: string
}

/**
 * A call as it streams: the first delta of call `index` has its `id` and
 * `name` (and `arguments: ''`), later ones the next pieces of `arguments`.
 * Concatenated, the pieces are the call's `arguments`.
 */
export interface ToolCallDelta {
  /** Which call of the answer (0 for the first). */
  index: number
  /** The call's id (first delta of a call only). */
  id?: string
  /** The tool's name (first delta of a call only). */
  name?: string
  /** The next piece of the call's arguments (empty in a call's first delta). */
  arguments: string
}

/** What to generate: the model, the prompt and how to sample. Unknown fields are INVALID_ARGUMENT. */
export interface GenerateRequest {
  /** The id given to `loadModel`. */
  model: string
  /** Raw text, tokenized as is (special tokens such as `<|im_start|>` are recognised). */
  prompt?: string
  /** Chat messages, rendered with the model's own chat template. Give `prompt` or `messages`. */
  messages?: ChatMessage[]
  /** Most tokens to generate. Default: until an end token or the context is full. */
  maxTokens?: number
  /** Sampling temperature, 0 or more; 0 (default) is greedy (always the most likely token). */
  temperature?: number
  /** Sample among the `topK` most likely tokens only; 0 (default) disables. */
  topK?: number
  /** Nucleus sampling: the smallest set of tokens whose probabilities reach `topP`. In (0, 1]; 1 (default) disables. */
  topP?: number
  /** Drops tokens less likely than `minP` times the most likely one. In [0, 1]; 0 (default) disables. */
  minP?: number
  /** Divides the logits of tokens seen in the last 64 (multiplies negative ones); 1 (default) disables. */
  repetitionPenalty?: number
  /** Seed of the sampler: same request and seed, same output. Default: random. */
  seed?: number
  /** Generation ends before the first occurrence of any of these; the text never contains it. */
  stop?: string | string[]
  /** Constrain the output to a JSON schema, any JSON object, a regex or a Lark grammar. Not with tools the model may call. */
  responseFormat?: ResponseFormat
  /**
   * Tools the model may call. They reach the model through its chat template;
   * calls are recognised in the model family's own format (Qwen / Hermes
   * `<tool_call>`, Llama 3.x JSON, Mistral `[TOOL_CALLS]`, Granite, Command R7B,
   * FireFunction, Functionary v3.1, DeepSeek R1, Kimi K2; others use the
   * Hermes format, described to the model where its template shows no tools).
   * Text chunks then carry content only; calls stream as `toolCallDeltas` and
   * end in `FinalChunk.toolCalls` with `finishReason: 'tool_calls'`.
   */
  tools?: Tool[]
  /** Default `'auto'`. */
  toolChoice?: ToolChoice
  /** Whether one answer may hold several calls (where the model's format allows). Default true. */
  parallelToolCalls?: boolean
  /**
   * Speculative decoding for this request; `false` turns off the model's
   * default ([`ModelSpec.speculative`]). See {@link Speculative}.
   */
  speculative?: Speculative | false
}

/** Per-call options of `generate`, `saveCache` and `loadCache`. */
export interface CallOptions {
  /** Aborting it ends the call with AbortError (code ABORTED) after the tokens produced before it. */
  signal?: AbortSignal
  /** Per-call deadline; the iterator rejects with TimeoutError (code TIMEOUT) when it passes. */
  timeoutMs?: number
}

/** A piece of the answer, as it is produced. */
export interface TokenChunk {
  /** New text: it never splits a UTF-8 character nor contains a stop string; text held back while it might still become one comes later, so it may be ''. With tools: content only, never part of a call. */
  text: string
  /** The token ids this chunk delivers. */
  tokenIds: number[]
  /** Always false: more chunks follow, at least the final one. */
  done: false
  /** With tools: pieces of the calls this token advanced. */
  toolCallDeltas?: ToolCallDelta[]
}

/** Token counts of a finished request. */
export interface Usage {
  /** Tokens of the prompt, after the chat template. */
  promptTokens: number
  /** Token ids delivered. */
  completionTokens: number
  /** Tokens guessed by speculative decoding and verified (0 without it). */
  draftedTokens: number
  /** Of the guessed tokens, those the model agreed with. */
  acceptedTokens: number
}

/** Where a finished request's time went. */
export interface Timings {
  /** From the call to the first token. */
  ttftMs: number
  /** Decode speed of this request (tokens after the first, per second). */
  tokensPerSecond: number
  /** From the call to the end. */
  totalMs: number
  /** Time spent waiting for a batch slot or for the model to load. */
  queuedMs: number
}

/** Why a generation ended: an end-of-turn token, a stop string or a complete constrained output (`'stop'`), `maxTokens` or the context (`'length'`), or tool calls (`'tool_calls'`). */
export type FinishReason = 'stop' | 'length' | 'tool_calls'

/** The last chunk of a stream that finished normally. */
export interface FinalChunk {
  /** Always empty: all text came in the chunks before. */
  text: ''
  /** Always empty. */
  tokenIds: []
  /** Always true: the stream is over. */
  done: true
  /** Why the generation ended (see {@link FinishReason}). */
  finishReason: FinishReason
  /** Token counts. */
  usage: Usage
  /** Time to first token, decode speed, total and queued time. */
  timings: Timings
  /** With tools: the complete calls (empty when the model answered with text). */
  toolCalls?: ToolCall[]
}

/** What a {@link Generation} yields: token chunks, then one {@link FinalChunk}. */
export type Chunk = TokenChunk | FinalChunk

/** A whole generation, as `Generation.collect()` returns it. */
export interface Completion {
  /** All the text. */
  text: string
  /** All the token ids delivered. */
  tokenIds: number[]
  /** As in {@link FinalChunk.finishReason}. */
  finishReason: FinishReason
  /** Token counts. */
  usage: Usage
  /** Time to first token, decode speed, total and queued time. */
  timings: Timings
  /** With tools: the complete calls. */
  toolCalls?: ToolCall[]
}

/**
 * A running generation. Yields token chunks, then one final chunk with
 * `done: true`; or rejects with an MlxServingError after delivering every
 * token produced before the failure. `break`, `return()` and `throw()` stop
 * the generation in the worker.
 */
export interface Generation extends AsyncIterableIterator<Chunk> {
  /** The next chunk; rejects with an MlxServingError if the request fails. After the end, `{ done: true }`. */
  next(): Promise<IteratorResult<Chunk, undefined>>
  /** Stops the generation in the worker and frees its batch slot (what `break` calls). */
  return(value?: unknown): Promise<IteratorResult<Chunk, undefined>>
  /** Stops the generation as `return()` does, then rethrows `err`. */
  throw(err?: unknown): Promise<never>
  /** Reads the whole generation into one result. */
  collect(): Promise<Completion>
}

/** One model's figures in `Engine.stats()`. */
export interface ModelStats {
  /** The model's id. */
  id: string
  /** `loading -> ready -> draining -> unloaded`, or `failed` when the load failed. */
  state: 'loading' | 'ready' | 'draining' | 'unloaded' | 'failed'
  /** Requests in the running batch. */
  activeRequests: number
  /** Requests waiting for a batch slot (or for the model to load). */
  queuedRequests: number
  /** Workers replaced after a crash or hang. */
  restarts: number
  /** Hung worker threads left behind (never reused). */
  abandonedWorkers: number
  /** Tokens generated; for an embedding model, tokens embedded (inputs read, special tokens included). */
  tokensGenerated: number
  /** Over the last 5 seconds. */
  tokensPerSecond: number
  /** Since the worker last beat its heartbeat (after every step, and every 100 ms when idle). */
  lastHeartbeatMsAgo: number
  /** How much of its weights the model's (latest) load has read; complete once ready. */
  loadProgress?: LoadProgress
  /** The current worker's prefix cache (emptied when a worker is replaced or the model unloaded). */
  prefixCache: PrefixCacheStats
  /** Token masks of constrained requests since the model was loaded. */
  constraintMasks: ConstraintMaskStats
  /** Speculative decoding since the model loaded. */
  speculative: SpeculativeStats
}

/**
 * Token masks computed for constrained rows (one per row and decode step;
 * a prompt's first token is not counted). They are computed on the worker
 * while the step's forward pass runs, so they cost time only where they
 * outlast it; `totalMs / masks` is the mean mask time per token.
 */
export interface ConstraintMaskStats {
  /** Masks computed. */
  masks: number
  /** Worker time they took, in all (milliseconds). */
  totalMs: number
}

/** How speculative decoding has done for a model. */
export interface SpeculativeStats {
  /** Tokens guessed and verified. */
  draftedTokens: number
  /** Of those, tokens the model agreed with. */
  acceptedTokens: number
  /** `acceptedTokens / draftedTokens` (0 before any guess). */
  acceptanceRate: number
}

/** A model's prefix cache: keys and values kept for prompts that start the same way. */
export interface PrefixCacheStats {
  /** Sequences held. */
  entries: number
  /** Tokens held, over all entries. */
  cachedTokens: number
  /** Memory held, in bytes (within `prefixCacheMb`). */
  bytes: number
  /** Prompts that started from a cached prefix. */
  hits: number
  /** Prompts that found no cached prefix of at least 32 tokens. */
  misses: number
  /** Prompt tokens that were not prefilled thanks to hits. */
  tokensReused: number
  /** Entries dropped to stay within `prefixCacheMb`. */
  evictions: number
}

/** A prompt to prefill and save: `prompt` or `messages`, as in `generate`. */
export interface CachePrompt {
  /** The id given to `loadModel`. */
  model: string
  /** Raw text, as in `generate`. */
  prompt?: string
  /** Chat messages, rendered with the model's chat template, as in `generate`. */
  messages?: ChatMessage[]
}

/** What `Engine.stats()` returns. */
export interface EngineStats {
  /** One entry per model known to the engine. */
  models: ModelStats[]
  /** MLX allocator figures: device memory on a GPU, host memory on the CPU. */
  memory: {
    /** Bytes in arrays now. */
    activeBytes: number
    /** Most bytes in arrays at once (MLX's peak figure). */
    peakBytes: number
    /** Bytes MLX keeps freed for reuse. */
    cacheBytes: number
  }
  /** The device the models run on (MLX's default device). */
  device: {
    /** 'cpu', or the GPU backend: 'cuda' (NVIDIA) or 'metal' (Apple). */
    backend: 'cpu' | 'cuda' | 'metal'
    /** The GPU's name (e.g. 'NVIDIA H100 80GB HBM3'); 'cpu' on the CPU. */
    name: string
    /** The GPU's memory in bytes (0 on the CPU). */
    totalBytes: number
  }
}

/**
 * Loads models and runs them, each on a worker thread of its own, never on
 * the JS event loop. Concurrent calls for one model are batched.
 *
 * @example
 * ```js
 * const engine = await Engine.create({ maxBatchSize: 8 })
 * await engine.loadModel({ id: 'smol', path: 'models/SmolLM2-135M-Instruct.Q4_1.gguf' })
 * const { text } = await engine.generate({ model: 'smol', prompt: 'The capital of France is', maxTokens: 8 }).collect()
 * await engine.shutdown()
 * ```
 */
export declare class Engine {
  /** Starts an engine (no model yet). Throws INVALID_ARGUMENT for an unknown or bad option. */
  constructor(options?: EngineOptions)
  /** Same as `new Engine(options)`, for symmetry with the async API. */
  static create(options?: EngineOptions): Promise<Engine>
  /** Whether `value` is an Engine (also one made by another copy of this package). */
  static isEngine(value: unknown): value is Engine
  /** Throws a TypeError that names what `value` is unless it is an Engine; `caller` names the function that needs one. */
  static assertEngine(value: unknown, caller: string): asserts value is Engine
  /** Resolves with the model's info once it is ready; concurrent loads of one id share one load. */
  loadModel(spec: ModelSpec): Promise<ModelInfo>
  /** Drains the model's requests (up to `drainTimeoutMs`, default 30000), unloads it, frees its memory. */
  unloadModel(id: string, options?: { drainTimeoutMs?: number }): Promise<void>
  /** Streams a completion. Throws synchronously (INVALID_ARGUMENT, MODEL_NOT_FOUND, QUEUE_FULL, SHUTTING_DOWN) before any work. */
  generate(request: GenerateRequest, options?: CallOptions): Generation
  /**
   * Prefills the prompt and writes its keys and values to `path` (a
   * safetensors file with the model's fingerprint, the token ids and a
   * checksum; replaced atomically). CACHE_WRITE_FAILED if it cannot be written.
   */
  saveCache(
    request: CachePrompt,
    path: string,
    options?: CallOptions,
  ): Promise<{
    /** The file written. */
    path: string
    /** Tokens of the prompt whose keys and values it holds. */
    tokens: number
    /** Size of the file. */
    bytes: number
  }>
  /**
   * Reads a `saveCache` file into the model's prefix cache; a prompt that
   * starts with its tokens then prefills only the rest. CACHE_INVALID for a
   * file of another model or format version, truncated or altered.
   */
  loadCache(
    model: string,
    path: string,
    options?: CallOptions,
  ): Promise<{
    /** Tokens of the prompt now in the prefix cache. */
    tokens: number
  }>
  /**
   * Embeds texts with an embedding model (a sentence-transformers directory
   * loaded with `loadModel`). Concurrent calls are batched together in the
   * model's worker. Rejects with INVALID_ARGUMENT (bad input, a generation
   * model, `dimensions` out of range, an unknown prompt), MODEL_NOT_FOUND,
   * QUEUE_FULL or SHUTTING_DOWN before any work; then with CONTEXT_OVERFLOW
   * (`truncate: false` and a text too long), TIMEOUT, ABORTED,
   * WORKER_CRASHED / WORKER_HUNG as `generate` does.
   *
   * @example
   * await engine.loadModel({ id: 'minilm', path: 'models/all-MiniLM-L6-v2' })
   * const { embeddings } = await engine.embed({ model: 'minilm', input: ['a cat', 'a dog'] })
   */
  embed(request: EmbedRequest, options?: CallOptions): Promise<EmbedResult>
  /**
   * Token ids of `text`: for a generation model as `generate` reads a prompt
   * (special tokens written in the text are recognised); for an embedding
   * model as `embed` reads an input (its special tokens added, truncated at `maxTokens`).
   */
  tokenize(model: string, text: string): number[]
  /** The text of token ids (the inverse of `tokenize`). */
  detokenize(model: string, ids: number[]): string
  /** The prompt text `messages` become with the model's chat template (with `options.tools`, as a request offering them renders it). */
  applyChatTemplate(model: string, messages: ChatMessage[], options?: { tools?: Tool[] }): string
  /** Info of a loaded model (MODEL_NOT_FOUND if it is not ready). */
  modelInfo(id: string): ModelInfo
  /** Per-model state, queue and throughput figures; MLX's memory; the device. */
  stats(): EngineStats
  /**
   * Refuses new work, lets in-flight requests finish for up to
   * `drainTimeoutMs` (default 30000), ends the rest with SHUTTING_DOWN,
   * unloads the models and joins the worker threads. Safe to call twice.
   */
  shutdown(options?: { drainTimeoutMs?: number }): Promise<void>
}

/** Opt-in: shut `engine` down on SIGTERM/SIGINT, then let the signal proceed. Returns a remover. */
export declare function shutdownOnSignals(
  engine: Engine,
  options?: { drainTimeoutMs?: number; signals?: NodeJS.Signals[] },
): () => void
