// tollgate's public API. Hand-curated: what is not exported here is internal.
export { createTollgate, Tollgate } from "./library/tollgate.js";
export type { TollgateOptions, AdmitRequest, ChallengeOffer } from "./library/tollgate.js";
export { Gate } from "./library/gate.js";
export type { ModelCall, GateAbortReason } from "./library/gate.js";
export { TollgateError, ERROR_CODES, errorMessage } from "./core/errors.js";
export type { ErrorCode } from "./core/errors.js";
export type { UsageRecord, Decision, Ended, UsageSource } from "./core/usage-record.js";
export type { Identity, AppIdentity } from "./core/identity.js";
export type { Store, Counter, ReserveResult, StoredKey } from "./core/store.js";
export { openaiChat } from "./formats/openai-chat.js";
export type { RequestFormat, Inspection, ReportedUsage } from "./core/format.js";
export { loadConfigFile, parseConfig } from "./config/load.js";
export { resolveConfig } from "./config/resolve.js";
export type { ResolvedConfig } from "./config/resolve.js";
// The config as a user writes it: keys with a default may be left out.
export type { ConfigInput as TollgateConfig } from "./config/schema.js";
export { ConfigError } from "./config/errors.js";
