// Writes docs/config.md from the config schema (run through `npm run docs:config`, which builds first).
import { writeFileSync } from "node:fs";
import { configReference } from "../dist/config/reference.js";

writeFileSync(new URL("../docs/config.md", import.meta.url), configReference());
