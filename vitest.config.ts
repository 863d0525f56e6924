import { defineConfig } from 'vitest/config';

// Three suites: unit (fast, `make check`), qemu (real QEMU boots), slurm (a real one-host cluster).
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'qemu',
          include: ['test/qemu/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 300_000,
        },
      },
      {
        test: {
          name: 'slurm',
          include: ['test/slurm/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 300_000,
          globalSetup: ['test/slurm/global-setup.ts'],
        },
      },
    ],
  },
});
