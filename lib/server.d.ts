import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Engine } from './index.js'

export interface ServerOptions {
  /** Address to bind. Default '127.0.0.1' (local only). */
  host?: string
  /** Port; 0 picks a free one. Default 8080. */
  port?: number
  /** When set, /v1/* requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string
  /** Largest request body accepted (413 past it). Default 4 MiB. */
  bodyLimitBytes?: number
  /** Deadline of each generation (504 / an error event past it). Default: the engine's. */
  timeoutMs?: number
  /** Seconds sent in `Retry-After` with 429 (queue full). Default 1. */
  retryAfterSeconds?: number
  /** /health answers 503 while a busy worker has not finished a step for this long. Default 30000. */
  hangThresholdMs?: number
}

export interface MlxServer {
  /** The node:http server. */
  readonly server: Server
  /** Starts listening; resolves with the base URL (`http://127.0.0.1:8080`) and port. */
  listen(): Promise<{ url: string; port: number }>
  /** Stops accepting, closes open connections. The engine stays the caller's to shut down. */
  close(): Promise<void>
}

/**
 * An OpenAI-compatible HTTP API over `engine`: POST /v1/chat/completions and
 * /v1/completions (streamed over SSE or not), POST /v1/embeddings (`input` a
 * string or an array of strings, `encoding_format` 'float' or 'base64',
 * `dimensions`; ours: `prompt`, a named prompt of the model, and `truncate`),
 * GET /v1/models, /health and /metrics (Prometheus text).
 */
export declare function createServer(engine: Engine, options?: ServerOptions): MlxServer

/** The bare request handler, to mount in a service's own node:http server. */
export declare function createHandler(engine: Engine, options?: ServerOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void>
