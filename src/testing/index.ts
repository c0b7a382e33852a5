// Test helpers for users' own tests: a mock OpenAI/Anthropic-compatible upstream.
export { MockUpstream, MOCK_WORDS, countPromptTokens, countTokens, mockText } from "./mock-upstream.js";
export type { MockBehavior, RecordedRequest } from "./mock-upstream.js";
export { simulatedFetch } from "./simulated-fetch.js";
