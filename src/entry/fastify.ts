// `tollgate/fastify`: the Fastify plugin. Importing it also types `request.tollgate` and adds `tg.fastify`.
export { fastifyPlugin } from "../integrations/fastify.js";
export type { FastifyOptions } from "../integrations/fastify.js";
