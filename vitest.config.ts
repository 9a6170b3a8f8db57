import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.spec.ts'],
    // Each file gets its own process (the addon is native and some files
    // inject faults), and files run one at a time: every file loads the real
    // model, and the machine has few cores.
    pool: 'forks',
    fileParallelism: false,
    // Ceilings for "it hung", not speed targets: a slow, busy 2-core machine
    // takes several times as long as an idle one. Heavier tests set their own.
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
})
