// The npm package as a user gets it: `scripts/pack.sh` makes the tarballs, a
// fresh project installs them (no build, no Rust, no Python) and runs a real
// generation from ESM and CommonJS, type-checks a consumer of the whole API
// with `tsc --strict`, runs the CLI, and runs the documented vitest pattern.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ErrorCode, MODEL_PATH } from './helpers'

const root = path.resolve(__dirname, '..')
const fixtures = path.join(__dirname, 'fixtures', 'consumer')
let project: string
let tarballs: string[]
const platformPackage = () => fs.readdirSync(path.join(project, 'node_modules')).find((d) => d.startsWith('mlx-serving-'))!

// Child processes run asynchronously: a test worker blocked for minutes misses vitest's own messages.
const exec = promisify(execFile)

/** Runs a command to its end; resolves with its exit status and output whatever the status. */
async function spawn(file: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  try {
    const { stdout, stderr } = await exec(file, args, { cwd: project, maxBuffer: 64 * 2 ** 20, ...options })
    return { status: 0, signal: null, stdout, stderr }
  } catch (e) {
    const err = e as { code?: number; signal?: string | null; stdout?: string; stderr?: string }
    return { status: typeof err.code === 'number' ? err.code : null, signal: err.signal ?? null, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) }
  }
}

async function node(args: string[]) {
  const r = await spawn(process.execPath, args)
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

beforeAll(async () => {
  await exec(path.join(root, 'scripts', 'pack.sh'), ['--no-build'], { cwd: root })
  tarballs = fs.readdirSync(path.join(root, 'target', 'pack')).map((f) => path.join(root, 'target', 'pack', f))
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'mlx-serving-consumer-'))
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, version: '1.0.0' }))
  // The package's own dependencies come from npm's cache when they are there.
  await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: project })
  for (const f of fs.readdirSync(fixtures)) fs.cpSync(path.join(fixtures, f), path.join(project, f), { recursive: true })
  // Test tools the consumer would have installed itself: this repo's copies.
  for (const tool of ['typescript', 'vitest', '@types', '@ai-sdk']) fs.symlinkSync(path.join(root, 'node_modules', tool), path.join(project, 'node_modules', tool))
}, 600_000)
afterAll(() => {
  if (project) fs.rmSync(project, { recursive: true, force: true })
})

describe('installed from the tarballs', () => {
  it('two tarballs; the platform package carries the addon and the runtime it loads', async () => {
    expect(tarballs.map((t) => path.basename(t)).sort()).toEqual([expect.stringMatching(/^mlx-serving-0\.\d+\.\d+\.tgz$/), expect.stringMatching(/^mlx-serving-[a-z0-9-]+-0\.\d+\.\d+\.tgz$/)].sort())
    const sizes = tarballs.map((t) => `${path.basename(t)} ${(fs.statSync(t).size / 2 ** 10).toFixed(0)} KiB`)
    console.log(`package sizes: ${sizes.join(', ')}`)
    const pkg = path.join(project, 'node_modules', platformPackage())
    const addon = fs.readdirSync(pkg).find((f) => f.endsWith('.node'))!
    expect(addon).toBeDefined()
    if (process.platform === 'linux') {
      // Every library the addon needs beyond the C/C++ runtime resolves inside the package.
      const ldd = (await exec('ldd', [path.join(pkg, addon)])).stdout
      const libs = Object.fromEntries([...ldd.matchAll(/^\s*(\S+) => (\S+)/gm)].map((m) => [m[1], fs.realpathSync(m[2])]))
      const system = /^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux)[.-]/
      for (const [name, file] of Object.entries(libs)) {
        if (!system.test(name)) expect(file, name).toContain(fs.realpathSync(pkg))
      }
      expect(Object.keys(libs)).toEqual(expect.arrayContaining(['libmlx.so', 'libopenblas.so.0']))
    }
  })

  it('ESM import runs a real generation', async () => {
    const out = JSON.parse(await node(['esm.mjs', MODEL_PATH]))
    expect(out).toMatchObject({ tokens: 5, finishReason: 'length', codes: Object.keys(ErrorCode).length })
    expect(out.text.length).toBeGreaterThan(0)
  })

  it('CommonJS require runs a real generation, with the server and provider entry points', async () => {
    expect(JSON.parse(await node(['cjs.cjs', MODEL_PATH]))).toMatchObject({ server: 'function', provider: 'function' })
  })

  it('a consumer using the whole API type-checks with tsc --strict', async () => {
    const r = await spawn(process.execPath, [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'])
    expect(r.stdout + r.stderr).toBe('')
    expect(r.status).toBe(0)
  })

  it('the CLI answers a prompt and prints model info', async () => {
    const bin = path.join(project, 'node_modules', '.bin', 'mlx-serving')
    const run = await spawn(bin, ['run', MODEL_PATH, 'Say hello.', '--max-tokens', '6', '--temperature', '0'])
    expect(run.status).toBe(0)
    expect(run.stdout.trim().length).toBeGreaterThan(0)
    expect(run.stderr).toMatch(/6 tokens, [\d.]+ tok\/s/)
    const info = await spawn(bin, ['info', MODEL_PATH])
    expect(info.status).toBe(0)
    expect(info.stdout).toMatch(/architecture\s+llama/)
    expect(info.stdout).toMatch(/context length\s+\d+/)
    expect(info.stdout).toMatch(/<\|im_start\|>/)
  })

  it('CLI chat keeps the history; an interrupt stops the answer, not the program', async () => {
    const { spawn: start } = await import('node:child_process')
    const bin = path.join(project, 'node_modules', '.bin', 'mlx-serving')
    const child = start(bin, ['run', MODEL_PATH, '--max-tokens', '400', '--temperature', '0'], { cwd: project, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const waitFor = (what: () => boolean) =>
      new Promise<void>((resolve) => {
        const check = () => what() && (resolve(), true)
        if (check()) return
        const onData = () => check() && (child.stdout.off('data', onData), child.stderr.off('data', onData))
        child.stdout.on('data', onData)
        child.stderr.on('data', onData)
      })
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await waitFor(() => stderr.includes('chatting with'))
    child.stdin.write('Count from 1 to 500, separated by commas.\n')
    await waitFor(() => stdout.length > 10) // the answer is streaming
    child.kill('SIGINT')
    await waitFor(() => stderr.includes('[stopped]'))
    const before = stdout.length
    child.stdin.write('What did I ask you before?\n')
    await waitFor(() => /tok\/s/.test(stderr) && stdout.length > before)
    child.stdin.end()
    expect(await exited).toBe(0)
    // The second turn's prompt holds the first question and the stopped answer:
    // longer than the same question asked on its own.
    const chatPrompt = Number(/prompt (\d+) tokens/.exec(stderr)![1])
    const alone = await spawn(bin, ['run', MODEL_PATH, 'What did I ask you before?', '--max-tokens', '1'])
    expect(chatPrompt).toBeGreaterThan(Number(/prompt (\d+) tokens/.exec(alone.stderr)![1]) + 10)
  })

  it('CLI serve answers OpenAI requests and shuts down cleanly on SIGTERM', async () => {
    const { spawn: start } = await import('node:child_process')
    const bin = path.join(project, 'node_modules', '.bin', 'mlx-serving')
    const child = start(bin, ['serve', '--model', `smol=${MODEL_PATH}`, '--port', '0'], { cwd: project, stdio: ['ignore', 'pipe', 'inherit'] })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    const url = await new Promise<string>((resolve) => {
      let out = ''
      child.stdout.on('data', (d) => {
        out += d
        const m = /\{"url":"([^"]+)"\}/.exec(out)
        if (m) resolve(m[1])
      })
    })
    const models = await (await fetch(`${url}/v1/models`)).json()
    expect(models.data.map((m: { id: string }) => m.id)).toEqual(['smol'])
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'smol', prompt: '1, 2, 3,', max_tokens: 3 }) })
    expect((await r.json()).usage.completion_tokens).toBe(3)
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
  })

  it('the documented vitest pattern: one model per test run, shared by several spec files, and vitest exits by itself', async () => {
    const r = await spawn(process.execPath, [path.join(project, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', 'vitest-project'], {
      env: { ...process.env, MODEL_PATH, CI: 'true' },
      timeout: 300_000, // a ceiling for "vitest never exited"
    })
    expect(r.signal).toBeNull()
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/2 passed/)
  })
})
