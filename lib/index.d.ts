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
  readonly code: ErrorCode
  name: 'TimeoutError' | 'AbortError' | 'MlxServingError'
}

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
}

export interface LoadProgress {
  bytesRead: number
  totalBytes: number
}

export interface ModelInfo {
  id: string
  path: string
  /** 'gguf'; for a directory 'mlx' (MLX-quantized weights) or 'safetensors' (float weights). */
  format: 'gguf' | 'mlx' | 'safetensors' | (string & {})
  /** The quantization as llama.cpp names it (`general.file_type`, e.g. 'Q4_K_M', 'Q4_1'), else the block type holding most of the weights. */
  quantization: string
  architecture: string
  parameters: number
  contextLength: number
  vocabSize: number
  layers: number
  hiddenSize: number
  heads: number
  kvHeads: number
  tensorTypes: string[]
  /** 'quantized' (weights kept 4-/8-bit; the default) or 'dense' (dequantized to f32 at load, `MLX_SERVING_WEIGHTS=dense`). */
  weightFormat: 'dense' | 'quantized'
  /** The dtype the model computes in: 'float32' on the CPU, 'float16' on a GPU (`MLX_SERVING_DTYPE=f32|f16|bf16` overrides). */
  dtype: 'float32' | 'float16' | 'bfloat16'
  hasChatTemplate: boolean
  /** Loading in all; on a GPU it includes `warmUpMs`. */
  loadMs: number
  /** Compiling the GPU's kernels at load, before the model counts as loaded (0 on the CPU). */
  warmUpMs: number
  /** Where the model runs: 'cpu', or 'cuda' / 'metal' when the MLX runtime has a GPU. */
  backend: 'cpu' | 'cuda' | 'metal'
}

/**
 * A chat message. An assistant message may carry the tool calls it made
 * (`content` may then be empty or null); a `tool` message answers one call
 * (`toolCallId`). Both reach the model through its own chat template, as
 * Hugging Face's `apply_chat_template` passes them.
 */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {})
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
      schema: JsonSchema
      /** A label for the schema (OpenAI's `json_schema.name`); not used for decoding. */
      name?: string
    }
  /** Any JSON object. */
  | { type: 'json_object' }
  /** Text that the regular expression matches as a whole (Rust `regex` syntax). */
  | { type: 'regex'; pattern: string }
  /** Text in the language of a Lark grammar (llguidance's dialect: `start` rule, `%json { ... }` for embedded schemas). */
  | { type: 'grammar'; lark: string }

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
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string }

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

export interface GenerateRequest {
  /** The id given to `loadModel`. */
  model: string
  /** Raw text, tokenized as is (special tokens such as `<|im_start|>` are recognised). */
  prompt?: string
  /** Chat messages, rendered with the model's own chat template. Give `prompt` or `messages`. */
  messages?: ChatMessage[]
  /** Most tokens to generate. Default: until an end token or the context is full. */
  maxTokens?: number
  /** 0 (default) is greedy. */
  temperature?: number
  /** 0 (default) disables. */
  topK?: number
  /** In (0, 1]; 1 (default) disables. */
  topP?: number
  /** In [0, 1]; 0 (default) disables. */
  minP?: number
  /** Over the last 64 tokens; 1 (default) disables. */
  repetitionPenalty?: number
  /** Same seed, same output. */
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
}

export interface CallOptions {
  signal?: AbortSignal
  /** Per-call deadline; the iterator rejects with TimeoutError (code TIMEOUT) when it passes. */
  timeoutMs?: number
}

export interface TokenChunk {
  /** New text (with tools: content only, never part of a call). */
  text: string
  tokenIds: number[]
  done: false
  /** With tools: pieces of the calls this token advanced. */
  toolCallDeltas?: ToolCallDelta[]
}

export interface Usage {
  promptTokens: number
  completionTokens: number
}

export interface Timings {
  /** From the call to the first token. */
  ttftMs: number
  /** Decode speed of this request (tokens after the first, per second). */
  tokensPerSecond: number
  totalMs: number
  /** Time spent waiting for a batch slot or for the model to load. */
  queuedMs: number
}

/** Why a generation ended: an end-of-turn token, a stop string or a complete constrained output (`'stop'`), `maxTokens` or the context (`'length'`), or tool calls (`'tool_calls'`). */
export type FinishReason = 'stop' | 'length' | 'tool_calls'

export interface FinalChunk {
  text: ''
  tokenIds: []
  done: true
  finishReason: FinishReason
  usage: Usage
  timings: Timings
  /** With tools: the complete calls (empty when the model answered with text). */
  toolCalls?: ToolCall[]
}

export type Chunk = TokenChunk | FinalChunk

export interface Completion {
  text: string
  tokenIds: number[]
  finishReason: FinishReason
  usage: Usage
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
  next(): Promise<IteratorResult<Chunk, undefined>>
  return(value?: unknown): Promise<IteratorResult<Chunk, undefined>>
  throw(err?: unknown): Promise<never>
  /** Reads the whole generation into one result. */
  collect(): Promise<Completion>
}

export interface ModelStats {
  id: string
  state: 'loading' | 'ready' | 'draining' | 'unloaded' | 'failed'
  activeRequests: number
  queuedRequests: number
  /** Workers replaced after a crash or hang. */
  restarts: number
  /** Hung worker threads left behind (never reused). */
  abandonedWorkers: number
  tokensGenerated: number
  /** Over the last 5 seconds. */
  tokensPerSecond: number
  lastHeartbeatMsAgo: number
  /** How much of its weights the model's (latest) load has read; complete once ready. */
  loadProgress?: LoadProgress
  /** The current worker's prefix cache (emptied when a worker is replaced or the model unloaded). */
  prefixCache: PrefixCacheStats
  /** Token masks of constrained requests since the model was loaded. */
  constraintMasks: ConstraintMaskStats
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

export interface PrefixCacheStats {
  /** Sequences held. */
  entries: number
  /** Tokens held, over all entries. */
  cachedTokens: number
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
  model: string
  prompt?: string
  messages?: ChatMessage[]
}

export interface EngineStats {
  models: ModelStats[]
  /** MLX allocator figures: device memory on a GPU, host memory on the CPU. */
  memory: { activeBytes: number; peakBytes: number; cacheBytes: number }
  /** The device the models run on (MLX's default device). */
  device: {
    backend: 'cpu' | 'cuda' | 'metal'
    /** The GPU's name (e.g. 'NVIDIA H100 80GB HBM3'); 'cpu' on the CPU. */
    name: string
    /** The GPU's memory in bytes (0 on the CPU). */
    totalBytes: number
  }
}

export declare class Engine {
  constructor(options?: EngineOptions)
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
  saveCache(request: CachePrompt, path: string, options?: CallOptions): Promise<{ path: string; tokens: number; bytes: number }>
  /**
   * Reads a `saveCache` file into the model's prefix cache; a prompt that
   * starts with its tokens then prefills only the rest. CACHE_INVALID for a
   * file of another model or format version, truncated or altered.
   */
  loadCache(model: string, path: string, options?: CallOptions): Promise<{ tokens: number }>
  tokenize(model: string, text: string): number[]
  detokenize(model: string, ids: number[]): string
  /** The prompt text `messages` become with the model's chat template (with `options.tools`, as a request offering them renders it). */
  applyChatTemplate(model: string, messages: ChatMessage[], options?: { tools?: Tool[] }): string
  /** Info of a loaded model (MODEL_NOT_FOUND if it is not ready). */
  modelInfo(id: string): ModelInfo
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
