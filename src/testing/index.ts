// Test helpers for users' own tests: a mock OpenAI/Anthropic-compatible upstream.
export { MockUpstream, MOCK_WORDS, countPromptTokens, countTokens, mockText } from "./mock-upstream.js";
export type { MockBehavior, RecordedRequest } from "./mock-upstream.js";
export { simulatedFetch } from "./simulated-fetch.js";
// The engine in process (memory store, fake clock, simulated provider) for fast policy tests.
export { fakeClock, testEngine } from "./test-engine.js";
export type { FakeClock, TestEngine, TestRequest, TestResult } from "./test-engine.js";
// Proof-of-work: solves a route's challenge the way the browser page does.
export { solveChallengeHeader } from "./solve-challenge.js";
