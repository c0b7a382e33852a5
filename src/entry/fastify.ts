// `tollgate/fastify`: the Fastify plugin. Importing it also types `request.tollgate` and adds `tg.fastify` and `tg.fastifyChallenge()`.
export { fastifyChallenge, fastifyPlugin } from "../integrations/fastify.js";
export type { FastifyOptions } from "../integrations/fastify.js";
