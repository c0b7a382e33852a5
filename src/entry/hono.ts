// `tollgate/hono`: the Hono middleware. Importing it also types `c.get("tollgate")` and adds `tg.hono()`.
export { honoMiddleware } from "../integrations/hono.js";
export type { HonoOptions } from "../integrations/hono.js";
