// Inference never runs on the JS thread: the event loop stays responsive, and
// the CPU time goes to the worker threads, not to the thread that runs JS.
import fs from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 8 })
})
afterAll(async () => {
  await engine?.shutdown()
})

/** CPU seconds used so far by the thread running JS (Linux: its /proc task entry; the main thread's id is the pid). */
function jsThreadCpuSeconds(): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after "(comm) ".
    return (Number(fields[11]) + Number(fields[12])) / 100 // USER_HZ is 100 on Linux
  } catch {
    return undefined
  }
}

it('while 8 streams generate, the JS thread stays free: little of the CPU time is its, and the event loop keeps turning', async () => {
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  const jsBefore = jsThreadCpuSeconds()
  const processBefore = process.cpuUsage()
  histogram.enable()
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) => drain(engine.generate({ model: MODEL, prompt: `Story number ${i}: Once upon a time`, maxTokens: 64 }))),
  )
  histogram.disable()
  const processCpu = process.cpuUsage(processBefore)
  const jsAfter = jsThreadCpuSeconds()
  for (const r of results) expect(r.ids).toHaveLength(64)

  const totalSeconds = (processCpu.user + processCpu.system) / 1e6
  if (jsBefore !== undefined && jsAfter !== undefined) {
    const jsSeconds = jsAfter - jsBefore
    console.log(`JS thread ${jsSeconds.toFixed(2)} s of ${totalSeconds.toFixed(2)} s CPU`)
    // Inference on the JS thread would make it most of the total.
    expect(jsSeconds).toBeLessThan(totalSeconds * 0.25)
  }
  // A ceiling for "the loop was blocked", loose enough for a busy machine
  // whose scheduler lets this thread wait for a core.
  const p99 = histogram.percentile(99) / 1e6
  console.log(`event-loop delay p99 ${p99.toFixed(2)} ms`)
  expect(p99).toBeLessThan(100)
})
