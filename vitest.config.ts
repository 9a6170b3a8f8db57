import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.spec.ts'],
    // Each file gets its own process (the addon is native and some files
    // inject faults), and files run one at a time: every file loads the real
    // model, and the machine has few cores.
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
})
