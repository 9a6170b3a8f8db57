// Graceful shutdown: refuse new work, drain, end the rest, free everything,
// and let the process exit by itself.
import { spawn } from 'node:child_process'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { afterFirstToken, drain, engineWithModel, MODEL, MODEL_PATH } from './helpers'

const counting = { model: MODEL, prompt: '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', maxTokens: 2000 }

function runChild(mode: string) {
  return new Promise<{ code: number | null; signal: string | null; stdout: string; ms: number }>((resolve, reject) => {
    const started = Date.now()
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'shutdown-child.mjs'), mode, MODEL_PATH], { stdio: ['ignore', 'pipe', 'inherit'] })
    let stdout = ''
    child.stdout.on('data', (d) => (stdout += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child did not exit by itself; stdout: ${stdout}`))
    }, 300_000) // a ceiling for "it never exited", not a speed target
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, ms: Date.now() - started })
    })
  })
}

describe('shutdown', () => {
  it('refuses new work with SHUTTING_DOWN, lets in-flight requests finish within the drain timeout', async () => {
    const engine = await engineWithModel()
    const { rest: running } = await afterFirstToken(engine.generate({ ...counting, maxTokens: 15 }))
    const done = engine.shutdown({ drainTimeoutMs: 30_000 })
    expect(() => engine.generate({ model: MODEL, prompt: 'x' })).toThrow(expect.objectContaining({ code: 'SHUTTING_DOWN' }))
    await expect(engine.loadModel({ id: 'other', path: MODEL_PATH })).rejects.toMatchObject({ code: 'SHUTTING_DOWN' })
    await done
    const r = await running
    expect(r.error).toBeUndefined()
    expect(r.ids).toHaveLength(15)
    expect(engine.stats().models).toHaveLength(0)
  })

  it('ends what is still running at the drain timeout with SHUTTING_DOWN, after its tokens', async () => {
    const engine = await engineWithModel()
    const stream = engine.generate(counting)
    const queuedBehind = Array.from({ length: 3 }, () => drain(engine.generate(counting)))
    const { firstIds, rest: running } = await afterFirstToken(stream)
    // 4 x 2000 tokens would take minutes; the drain timeout must cut them short.
    const started = Date.now()
    await engine.shutdown({ drainTimeoutMs: 300 })
    expect(Date.now() - started).toBeLessThan(60_000)
    for (const r of [await running, ...(await Promise.all(queuedBehind))]) {
      expect(r.error).toMatchObject({ code: 'SHUTTING_DOWN' })
      expect(r.final).toBeUndefined()
    }
    expect(firstIds.length).toBeGreaterThan(0)
    expect((await running).ids.length).toBeLessThan(2000)
  })

  it('a second shutdown is harmless, also when concurrent', async () => {
    const engine = await engineWithModel()
    await Promise.all([engine.shutdown({ drainTimeoutMs: 100 }), engine.shutdown()])
    await engine.shutdown()
    expect(() => engine.generate({ model: MODEL, prompt: 'x' })).toThrow(expect.objectContaining({ code: 'SHUTTING_DOWN' }))
  })

  it('afterwards the process exits by itself', async () => {
    const r = await runChild('exit')
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ tokens: 8, state: 0 })
  })

  it('shutdownOnSignals drains on SIGTERM, then lets the signal end the process', async () => {
    const r = await runChild('signal')
    expect(r.signal).toBe('SIGTERM')
    const out = JSON.parse(r.stdout)
    expect(out).toEqual({ tokens: 20, finish: 'length' })
  })
})
