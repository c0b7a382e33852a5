import { loadConfigFile } from "../config/load.js";
import { resolveConfig, type ResolvedConfig } from "../config/resolve.js";

/** Loads and resolves a config file, or exits 2 naming every field at fault (SPEC §3). */
export function loadOrExit(file: string): ResolvedConfig {
  try {
    return resolveConfig(loadConfigFile(file));
  } catch (err) {
    if ((err as Error).name === "ConfigError") {
      process.stderr.write(`tollgate: invalid config ${file}\n${(err as Error).message.replace(/^/gm, "  ")}\n`);
      process.exit(2);
    }
    throw err;
  }
}
