import type { ResolvedConfig } from "../config/resolve.js";
import { HttpProvider } from "./http.js";
import type { Provider } from "../core/provider.js";
import { SimulatedProvider } from "./simulated.js";

export function createProviders(config: ResolvedConfig): Record<string, Provider> {
  const out: Record<string, Provider> = {};
  for (const [name, p] of Object.entries(config.providers)) {
    out[name] = p.type === "simulated" ? new SimulatedProvider(p) : new HttpProvider({ ...p, type: p.type });
  }
  return out;
}
