/**
 * An OpenAI-compatible HTTP server over an {@link Engine} in your process:
 * chat and text completions (streamed over SSE or not), the model list,
 * a health check and Prometheus metrics.
 *
 * @example
 * ```js
 * const { createServer } = require('mlx-serving/server')
 * const server = createServer(engine, { port: 8080, apiKey: process.env.API_KEY })
 * const { url } = await server.listen() // any OpenAI client: baseURL `${url}/v1`
 * ```
 *
 * @module mlx-serving/server
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Engine } from './index.js'

/** Options of `createServer` and `createHandler`; every one has a default. */
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

/** A server made by `createServer`; it does not listen until `listen()`. */
export interface MlxServer {
  /** The node:http server. */
  readonly server: Server
  /** Starts listening; resolves with the base URL (`http://127.0.0.1:8080`) and port. */
  listen(): Promise<{
    /** The base URL, e.g. `http://127.0.0.1:8080`; the OpenAI API is under `${url}/v1`. */
    url: string
    /** The port bound (the one picked when `port` was 0). */
    port: number
  }>
  /** Stops accepting, closes open connections. The engine stays the caller's to shut down. */
  close(): Promise<void>
}

/**
 * An OpenAI-compatible HTTP API over `engine`: POST /v1/chat/completions and
 * /v1/completions (streamed over SSE or not), POST /v1/embeddings (`input` a
 * string or an array of strings, `encoding_format` 'float' or 'base64',
 * `dimensions`; ours: `prompt`, a named prompt of the model, and `truncate`),
 * GET /v1/models, /health and /metrics (Prometheus text).
 *
 * Throws a TypeError unless `engine` is an {@link Engine}.
 */
export declare function createServer(engine: Engine, options?: ServerOptions): MlxServer

/** The bare request handler, to mount in a service's own node:http server. Throws a TypeError unless `engine` is an {@link Engine}. */
export declare function createHandler(engine: Engine, options?: ServerOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void>
