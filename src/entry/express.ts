// `tollgate/express`: the Express adapter. Importing it also types `req.tollgate` and adds `tg.express()` and `tg.expressChallenge()`.
export { expressChallenge, expressMiddleware, expressErrorHandler } from "../integrations/express.js";
export type { ExpressOptions } from "../integrations/express.js";
