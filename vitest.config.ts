import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts", "examples/**/*.test.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // e2e tests spawn gateway processes; two cores, so keep file parallelism modest.
    maxWorkers: 2,
  },
});
