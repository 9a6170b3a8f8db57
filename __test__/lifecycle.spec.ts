// Model lifecycle: ready means ready, loads are shared, generate waits for a
// loading model, failures are typed, unload drains then frees memory.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { afterFirstToken, drain, Engine, MODEL_PATH } from './helpers'

let engine: InstanceType<typeof Engine>
let dir: string

beforeAll(async () => {
  engine = await Engine.create()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlx-serving-'))
})
afterAll(async () => {
  await engine?.shutdown()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('model lifecycle', () => {
  it('loadModel resolves only when the model is ready', async () => {
    const info = await engine.loadModel({ id: 'a', path: MODEL_PATH })
    expect(engine.stats().models.find((m) => m.id === 'a')?.state).toBe('ready')
    expect(info).toMatchObject({ id: 'a', architecture: 'llama', layers: 30, hiddenSize: 576, heads: 9, kvHeads: 3, vocabSize: 49152 })
    expect(engine.tokenize('a', 'hello').length).toBeGreaterThan(0)
    await engine.unloadModel('a')
  })

  it('loadModel reports progress while it reads the weights, ending with all of them', async () => {
    const reports: { bytesRead: number; totalBytes: number }[] = []
    await engine.loadModel({ id: 'progress', path: MODEL_PATH, onProgress: (p) => reports.push(p) })
    expect(reports.length).toBeGreaterThan(0)
    const total = reports[0].totalBytes
    expect(total).toBeGreaterThan(50e6)
    for (const [i, r] of reports.entries()) {
      expect(r.totalBytes).toBe(total)
      expect(r.bytesRead).toBeLessThanOrEqual(total)
      if (i > 0) expect(r.bytesRead).toBeGreaterThan(reports[i - 1].bytesRead)
    }
    expect(reports.at(-1)!.bytesRead).toBe(total)
    await expect(engine.loadModel({ id: 'p2', path: MODEL_PATH, onProgress: 5 as never })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await engine.unloadModel('progress')
  })

  it('concurrent loads of one id share one load', async () => {
    const [x, y, z] = await Promise.all([1, 2, 3].map(() => engine.loadModel({ id: 'shared', path: MODEL_PATH })))
    expect(y.loadMs).toBe(x.loadMs)
    expect(z.loadMs).toBe(x.loadMs)
    expect(engine.stats().models.filter((m) => m.id === 'shared')).toHaveLength(1)
    await engine.unloadModel('shared')
  })

  it('a generate issued while the model loads waits for it instead of racing it', async () => {
    const loading = engine.loadModel({ id: 'late', path: MODEL_PATH })
    expect(engine.stats().models.find((m) => m.id === 'late')?.state).toBe('loading')
    const r = await drain(engine.generate({ model: 'late', prompt: 'Hello', maxTokens: 4 }))
    expect(r.error).toBeUndefined()
    expect(r.ids).toHaveLength(4)
    expect(r.final!.timings.queuedMs).toBeGreaterThan(0)
    await loading
    await engine.unloadModel('late')
  })

  it('a generate for a model whose load fails ends with MODEL_LOAD_FAILED', async () => {
    // A truncated file fails after the header check; the request may be
    // queued (it then ends with the error) or arrive after the failure (thrown).
    const file = write('doomed.gguf', fs.readFileSync(MODEL_PATH).subarray(0, 20_000_000))
    const loading = engine.loadModel({ id: 'doomed', path: file }).catch((e) => e)
    let error
    try {
      error = (await drain(engine.generate({ model: 'doomed', prompt: 'Hello', maxTokens: 4 }))).error
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringMatching(/truncated/) })
    expect(await loading).toMatchObject({ code: 'MODEL_LOAD_FAILED' })
    // Once failed, new calls are refused up front with the reason.
    expect(() => engine.generate({ model: 'doomed', prompt: 'Hello' })).toThrow(expect.objectContaining({ code: 'MODEL_LOAD_FAILED' }))
  })

  it('an unknown model id is MODEL_NOT_FOUND', () => {
    expect(() => engine.generate({ model: 'nope', prompt: 'x' })).toThrow(expect.objectContaining({ code: 'MODEL_NOT_FOUND' }))
    expect(() => engine.tokenize('nope', 'x')).toThrow(expect.objectContaining({ code: 'MODEL_NOT_FOUND' }))
  })

  it.each([
    ['a missing file', () => path.join(dir, 'absent.gguf'), /cannot open|No such file/],
    ['a file that is not GGUF', () => write('text.gguf', 'hello, I am not a model'), /not a GGUF file/],
    ['a truncated GGUF', () => write('truncated.gguf', fs.readFileSync(MODEL_PATH).subarray(0, 5_000_000)), /truncated/],
    ['a corrupt header', () => write('corrupt.gguf', corruptHeader()), /corrupt|implausible|truncated/],
    ['a directory that is not a model directory', () => dir, /without config\.json is not a model directory/],
  ])('%s gives MODEL_LOAD_FAILED with the reason', async (_, file, reason) => {
    const err = await engine.loadModel({ id: `bad-${Math.random()}`, path: file() }).catch((e) => e)
    expect(err).toMatchObject({ code: 'MODEL_LOAD_FAILED', name: 'MlxServingError' })
    expect(err.message).toMatch(reason)
  })

  it('a failed load can be retried under the same id', async () => {
    await expect(engine.loadModel({ id: 'retry', path: path.join(dir, 'absent.gguf') })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED' })
    const link = path.join(dir, 'absent.gguf')
    fs.symlinkSync(MODEL_PATH, link)
    try {
      await expect(engine.loadModel({ id: 'retry', path: link })).resolves.toMatchObject({ id: 'retry' })
      await engine.unloadModel('retry')
    } finally {
      fs.rmSync(link)
    }
  })

  it('unloadModel drains in-flight requests, then frees MLX memory', async () => {
    const before = engine.stats().memory.activeBytes
    await engine.loadModel({ id: 'u', path: MODEL_PATH })
    const loaded = engine.stats().memory.activeBytes
    const { rest: running } = await afterFirstToken(engine.generate({ model: 'u', prompt: '1, 2, 3,', maxTokens: 20 }))
    await engine.unloadModel('u')
    const r = await running
    expect(r.error).toBeUndefined()
    expect(r.ids).toHaveLength(20)
    expect(() => engine.generate({ model: 'u', prompt: 'x' })).toThrow(expect.objectContaining({ code: 'MODEL_NOT_FOUND' }))
    // Whatever the weight format, the model's memory comes back: the engine
    // holds no more than before the load (plus a little for other models' caches).
    const weights = loaded - before
    expect(weights).toBeGreaterThan(50e6)
    expect(engine.stats().memory.activeBytes).toBeLessThan(before + weights * 0.1)
  })
})

function write(name: string, data: string | Buffer) {
  const file = path.join(dir, name)
  fs.writeFileSync(file, data)
  return file
}

function corruptHeader() {
  const bytes = Buffer.from(fs.readFileSync(MODEL_PATH).subarray(0, 1_000_000))
  bytes.writeBigUInt64LE(0xffffffffffn, 8) // tensor count
  return bytes
}
