// Model files that change, disappear or cannot be read give typed errors,
// never a crash.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, MODEL_PATH } from './helpers'

let engine: InstanceType<typeof Engine>
let dir: string

beforeAll(async () => {
  engine = await Engine.create()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlx-serving-files-'))
  fs.chmodSync(dir, 0o755)
})
afterAll(async () => {
  await engine?.shutdown()
  fs.rmSync(dir, { recursive: true, force: true })
})

async function works(id: string) {
  const r = await drain(engine.generate({ model: id, prompt: '1, 2, 3,', maxTokens: 5 }))
  expect(r.error).toBeUndefined()
  expect(r.ids).toHaveLength(5)
}

describe('model files', () => {
  it('a model file truncated while loaded: the loaded model keeps working; reloading it is MODEL_LOAD_FAILED', async () => {
    const file = path.join(dir, 'shrinking.gguf')
    fs.copyFileSync(MODEL_PATH, file)
    await engine.loadModel({ id: 'shrinking', path: file })
    fs.truncateSync(file, 1000)
    await works('shrinking')
    await engine.unloadModel('shrinking')
    await expect(engine.loadModel({ id: 'shrinking', path: file })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringMatching(/truncated/) })
  })

  it('a model file overwritten while loaded: the loaded model keeps working; reloading it is MODEL_LOAD_FAILED', async () => {
    const file = path.join(dir, 'changing.gguf')
    fs.copyFileSync(MODEL_PATH, file)
    await engine.loadModel({ id: 'changing', path: file })
    fs.writeFileSync(file, Buffer.alloc(4096, 0x41))
    await works('changing')
    await engine.unloadModel('changing')
    await expect(engine.loadModel({ id: 'changing', path: file })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringMatching(/not a GGUF/) })
  })

  it('a model file deleted while loaded: the loaded model keeps working; reloading it is MODEL_LOAD_FAILED', async () => {
    const file = path.join(dir, 'vanishing.gguf')
    fs.copyFileSync(MODEL_PATH, file)
    await engine.loadModel({ id: 'vanishing', path: file })
    fs.rmSync(file)
    await works('vanishing')
    await engine.unloadModel('vanishing')
    await expect(engine.loadModel({ id: 'vanishing', path: file })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringMatching(/cannot open/) })
  })

  it('a model directory without read permission is MODEL_LOAD_FAILED', () => {
    const locked = path.join(dir, 'locked')
    fs.mkdirSync(locked)
    fs.copyFileSync(MODEL_PATH, path.join(locked, 'model.gguf'))
    fs.chmodSync(locked, 0o000)
    try {
      // Root reads through permissions, so as root the check runs as `nobody`.
      const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}
      const r = spawnSync(process.execPath, [path.join(__dirname, 'fixtures', 'load-child.cjs'), path.join(locked, 'model.gguf')], {
        ...asNobody,
        encoding: 'utf8',
        env: { ...process.env, HOME: dir },
      })
      // As `nobody`, Node itself and this checkout must be reachable (not so under a 0700 /root).
      expect(r.status, `the child did not run: ${r.error?.message ?? r.stderr}`).toBe(0)
      const out = JSON.parse(r.stdout)
      expect(out).toMatchObject({ code: 'MODEL_LOAD_FAILED' })
      expect(out.message).toMatch(/Permission denied/)
    } finally {
      fs.chmodSync(locked, 0o755)
    }
  })
})
