/**
 * `tg.express()`, `tg.fastify`, `tg.hono()`, `tg.fetch()` and `gate.aiSdk()` belong to the
 * subpath modules (`tollgate/express`, `tollgate/ai-sdk`, …): each module installs its method on
 * the class when it is imported and declares the method's type beside the framework types it
 * needs. So the core entry loads no adapter and its published types name no framework, and a
 * method exists (at run time and to the compiler) exactly when its module is loaded.
 */

/** Until its module is imported, each method says which import it needs (for JavaScript callers; TypeScript already refuses the call). */
export function awaitSubpaths(proto: object, owner: string, methods: Record<string, { subpath: string; getter?: boolean }>): void {
  for (const [name, { subpath, getter }] of Object.entries(methods)) {
    const fail = () => {
      throw new Error(`${owner}.${name} is part of ${subpath}: add \`import "${subpath}"\` (or import its functions from there) before using it`);
    };
    Object.defineProperty(proto, name, getter ? { configurable: true, get: fail } : { configurable: true, writable: true, value: fail });
  }
}

/** Installs a subpath module's methods (a function is a method; `{ get }` a getter). */
export function installMethods(proto: object, methods: Record<string, ((...args: never[]) => unknown) | { get: () => unknown }>): void {
  for (const [name, m] of Object.entries(methods)) {
    Object.defineProperty(proto, name, typeof m === "function" ? { configurable: true, writable: true, value: m } : { configurable: true, get: m.get });
  }
}
