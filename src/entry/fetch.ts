// `tollgate/fetch`: Web-standard handlers (Next.js route handlers, Bun, Deno). Importing it also adds `tg.fetch()` and `tg.fetchChallenge()`.
export { fetchChallenge, fetchHandler } from "../integrations/fetch.js";
export type { FetchOptions, FetchRouteHandler } from "../integrations/fetch.js";
