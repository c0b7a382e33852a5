#!/usr/bin/env node
import { parseArgs } from "node:util";
import { loadOrExit } from "./config-file.js";

const HELP = `tollgate — a gateway that makes every AI request pay its way

Usage: tollgate <command> [options]

Commands:
  serve [--config FILE] [--port N] [--host H]   run the gateway (default config ./tollgate.yaml)
  check [--config FILE]                         validate a config and print what it resolved to
  demo [--port N] [--traffic]                   run the gateway on the bundled demo config (offline);
                                                --traffic also sends it normal and abusive traffic
  keys create --user ID --plan PLAN [--routes a,b] [--service] [--expires ISO]
              [--org ORG] [--daily USD] [--monthly USD] [--total USD]
  keys list | keys revoke KEY_ID                manage keys in the store
  usage [--since 24h] [--by user|route|model|ip|signal|org|key] [--top N] [--series 1h] [--json]
                                                spend and token totals from the usage records;
                                                --series: one row per time bucket instead
  budgets [--since 31d] [--top N] [--json]      every budget level (gateway, routes, orgs, users,
                                                keys): limit, used, remaining, state, resets_at
  budgets set user|ip|org|key ID [--daily USD] [--monthly USD] [--total USD] [--until ISO|2h]
  budgets clear user|ip|org|key ID              an operator's budget override (temporary with --until)
  schema                                        print the config's JSON Schema

Every command that reads the store takes --config FILE.
`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string", short: "c" },
      port: { type: "string", short: "p" },
      host: { type: "string" },
      help: { type: "boolean", short: "h" },
      user: { type: "string" },
      plan: { type: "string" },
      routes: { type: "string" },
      service: { type: "boolean" },
      expires: { type: "string" },
      org: { type: "string" },
      daily: { type: "string" },
      monthly: { type: "string" },
      total: { type: "string" },
      since: { type: "string" },
      by: { type: "string" },
      json: { type: "boolean" },
      top: { type: "string" },
      series: { type: "string" },
      traffic: { type: "boolean" },
      until: { type: "string" },
    },
  });
  if (!command || command === "help" || command === "--help" || command === "-h" || values.help) {
    process.stdout.write(HELP);
    return;
  }
  const configFile = values.config ?? "./tollgate.yaml";
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) fail(`--port: expected a port number, got ${values.port}`);
  switch (command) {
    // Each command loads only its own modules: `usage` or `keys` in a script or a health check
    // should not pay for the gateway's HTTP client, metrics and tracing.
    case "serve": {
      const { serve } = await import("./serve.js");
      return serve(loadOrExit(configFile), { port, host: values.host });
    }
    case "demo": {
      const [{ serve }, { DEMO_CONFIG, demoBanner, generateTraffic }] = await Promise.all([import("./serve.js"), import("./demo.js")]);
      const config = loadOrExit(DEMO_CONFIG);
      if (!values.traffic) return serve(config, { port, host: values.host, banner: (url) => demoBanner(url) });
      // The simulated callers come from many addresses, carried in X-Forwarded-For.
      config.server.trustProxy = 1;
      return serve(config, { port, host: values.host, banner: (url) => demoBanner(url, true), onListening: (url) => void generateTraffic(url) });
    }
    case "check": {
      const { describeConfig } = await import("./check.js");
      const config = loadOrExit(configFile);
      process.stdout.write(describeConfig(config, configFile));
      return;
    }
    case "schema": {
      const { configJsonSchema } = await import("../config/schema.js");
      process.stdout.write(JSON.stringify(configJsonSchema(), null, 2) + "\n");
      return;
    }
    case "keys":
      return (await import("./keys.js")).keysCommand(loadOrExit(configFile), positionals, values);
    case "usage":
      return (await import("./usage.js")).usageCommand(loadOrExit(configFile), values);
    case "budgets":
      return (await import("./budgets.js")).budgetsCommand(loadOrExit(configFile), positionals, values);
    default:
      fail(`unknown command "${command}"; see tollgate --help`);
  }
}

function fail(message: string): never {
  process.stderr.write(`tollgate: ${message}\n`);
  process.exit(2);
}

main(process.argv.slice(2)).catch((err) => {
  if ((err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) fail((err as Error).message);
  process.stderr.write(`tollgate: ${(err as Error).message}\n`);
  process.exit(1);
});
