// The randomized scheduler property (scheduler/property.mjs): random batches
// of requests that join and leave mid-batch, ending every way a request can
// end, each answer compared with the same request alone, and no request may
// fail. It runs once per step-path mode (scheduler/modes.mjs), each in a
// process of its own since the switches are read once per process.
//
// SCHEDULER_SEED fixes the seed (printed either way), SCHEDULER_CASES the cases
// per mode, SCHEDULER_MODES (comma-separated) the modes. A failure prints its
// case's seed and the command that replays it.
import { execFile } from 'node:child_process'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { MODES } from './scheduler/modes.mjs'

const driver = path.join(__dirname, 'scheduler', 'property.mjs')
const seed = Number(process.env.SCHEDULER_SEED ?? Math.floor(Math.random() * 2 ** 31))
const cases = Number(process.env.SCHEDULER_CASES ?? 10)
const modes = process.env.SCHEDULER_MODES ? process.env.SCHEDULER_MODES.split(',') : Object.keys(MODES)

interface Report {
  seed: number
  cases: number
  requests: number
  failures: { caseSeed: number; request: number; what: string; wrong: string }[]
  endings: Record<string, number>
  activeAfter: number
}

function runMode(mode: string): Promise<Report> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [driver, '--mode', mode, '--seed', String(seed), '--cases', String(cases), '--json'],
      { maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const line = stdout.trim().split('\n').pop()
        try {
          resolve(JSON.parse(line ?? ''))
        } catch {
          reject(new Error(`the driver gave no report (${error?.message ?? 'no error'}):\n${stderr}`))
        }
      },
    )
  })
}

describe('randomized scheduler property: batched answers equal alone, no request fails', () => {
  console.log(`scheduler property: seed ${seed}, ${cases} cases per mode (SCHEDULER_SEED=${seed} replays)`)
  for (const mode of modes) {
    // A ceiling for "it hung": a case takes seconds on an idle 2-core machine.
    it(`mode ${mode}`, { timeout: 1_800_000 }, async () => {
      const report = await runMode(mode)
      console.log(`[${mode}] ${report.cases} cases, ${report.requests} requests, endings ${JSON.stringify(report.endings)}`)
      for (const f of report.failures) {
        console.log(
          `[${mode}] case seed ${f.caseSeed}, request ${f.request}: ${f.wrong}\n  ${f.what}\n` +
            `  replay: node __test__/scheduler/property.mjs --mode ${mode} --case-seed ${f.caseSeed}`,
        )
      }
      expect(report.cases).toBe(cases)
      expect(report.failures).toEqual([])
      expect(report.activeAfter).toBe(0)
    })
  }
})
