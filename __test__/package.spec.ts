// The npm package as a user gets it: `scripts/pack.sh` makes the tarballs, a
// fresh project installs them (no build, no Rust, no Python) and runs a real
// generation from ESM and CommonJS, type-checks a consumer of the whole API
// with `tsc --strict`, runs the CLI, and runs the documented vitest pattern.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MODEL_PATH } from './helpers'

const root = path.resolve(__dirname, '..')
const fixtures = path.join(__dirname, 'fixtures', 'consumer')
let project: string
let tarballs: string[]
const platformPackage = () => fs.readdirSync(path.join(project, 'node_modules')).find((d) => d.startsWith('mlx-serving-'))!

function node(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, args, { cwd: project, encoding: 'utf8', env: { ...process.env, ...env } })
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

beforeAll(() => {
  execFileSync(path.join(root, 'scripts', 'pack.sh'), ['--no-build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] })
  tarballs = fs.readdirSync(path.join(root, 'target', 'pack')).map((f) => path.join(root, 'target', 'pack', f))
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'mlx-serving-consumer-'))
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, version: '1.0.0' }))
  // The package's own dependencies come from npm's cache when they are there.
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs], { cwd: project, stdio: ['ignore', 'ignore', 'inherit'] })
  for (const f of fs.readdirSync(fixtures)) fs.cpSync(path.join(fixtures, f), path.join(project, f), { recursive: true })
  // Test tools the consumer would have installed itself: this repo's copies.
  for (const tool of ['typescript', 'vitest', '@types']) fs.symlinkSync(path.join(root, 'node_modules', tool), path.join(project, 'node_modules', tool))
}, 600_000)
afterAll(() => {
  if (project) fs.rmSync(project, { recursive: true, force: true })
})

describe('installed from the tarballs', () => {
  it('two tarballs; the platform package carries the addon and the runtime it loads', () => {
    expect(tarballs.map((t) => path.basename(t)).sort()).toEqual([expect.stringMatching(/^mlx-serving-0\.\d+\.\d+\.tgz$/), expect.stringMatching(/^mlx-serving-[a-z0-9-]+-0\.\d+\.\d+\.tgz$/)].sort())
    const sizes = tarballs.map((t) => `${path.basename(t)} ${(fs.statSync(t).size / 2 ** 20).toFixed(1)} MiB`)
    console.log(`package sizes: ${sizes.join(', ')}`)
    const pkg = path.join(project, 'node_modules', platformPackage())
    const addon = fs.readdirSync(pkg).find((f) => f.endsWith('.node'))!
    expect(addon).toBeDefined()
    if (process.platform === 'linux') {
      // Every library the addon needs beyond the C/C++ runtime resolves inside the package.
      const ldd = execFileSync('ldd', [path.join(pkg, addon)], { encoding: 'utf8' })
      const libs = Object.fromEntries([...ldd.matchAll(/^\s*(\S+) => (\S+)/gm)].map((m) => [m[1], fs.realpathSync(m[2])]))
      const system = /^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux)[.-]/
      for (const [name, file] of Object.entries(libs)) {
        if (!system.test(name)) expect(file, name).toContain(fs.realpathSync(pkg))
      }
      expect(Object.keys(libs)).toEqual(expect.arrayContaining(['libmlx.so', 'libopenblas.so.0']))
    }
  })

  it('ESM import runs a real generation', () => {
    const out = JSON.parse(node(['esm.mjs', MODEL_PATH]))
    expect(out).toMatchObject({ tokens: 5, finishReason: 'length', codes: 11 })
    expect(out.text.length).toBeGreaterThan(0)
  })

  it('CommonJS require runs a real generation, with the server and provider entry points', () => {
    expect(JSON.parse(node(['cjs.cjs', MODEL_PATH]))).toMatchObject({ server: 'function', provider: 'function' })
  })

  it('a consumer using the whole API type-checks with tsc --strict', () => {
    const r = spawnSync(process.execPath, [path.join(project, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' })
    expect(r.stdout + r.stderr).toBe('')
    expect(r.status).toBe(0)
  })

  it('the CLI answers a prompt and prints model info', () => {
    const bin = path.join(project, 'node_modules', '.bin', 'mlx-serving')
    const run = spawnSync(bin, ['run', MODEL_PATH, 'Say hello.', '--max-tokens', '6', '--temperature', '0'], { cwd: project, encoding: 'utf8' })
    expect(run.status).toBe(0)
    expect(run.stdout.trim().length).toBeGreaterThan(0)
    expect(run.stderr).toMatch(/6 tokens, [\d.]+ tok\/s/)
    const info = spawnSync(bin, ['info', MODEL_PATH], { cwd: project, encoding: 'utf8' })
    expect(info.status).toBe(0)
    expect(info.stdout).toMatch(/architecture\s+llama/)
    expect(info.stdout).toMatch(/context length\s+\d+/)
    expect(info.stdout).toMatch(/<\|im_start\|>/)
  })

  it('the documented vitest pattern: one model per test run, shared by several spec files, and vitest exits by itself', () => {
    const r = spawnSync(process.execPath, [path.join(project, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', 'vitest-project'], {
      cwd: project,
      encoding: 'utf8',
      env: { ...process.env, MODEL_PATH, CI: 'true' },
      timeout: 300_000, // a ceiling for "vitest never exited"
    })
    expect(r.signal).toBeNull()
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/2 passed/)
  })
})
