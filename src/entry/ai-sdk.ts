// `tollgate/ai-sdk`: Vercel AI SDK model middleware. Importing it also adds `gate.aiSdk()`.
export { aiSdkMiddleware } from "../integrations/ai-sdk.js";
export { errorMessage } from "../core/errors.js";
