import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export interface RedisServerOptions {
  /**
   * Keep data across restart(): an append-only file fsynced on every write, in a temp directory.
   * Without it a restarted server is empty, as a Redis without persistence is after a crash.
   */
  persistent?: boolean;
}

/**
 * A throwaway redis-server on a free loopback port, for tests. `stop()` kills it like a crash,
 * `restart()` brings it back on the same port, so a test can take Redis away mid-run and give it
 * back. Needs `redis-server` on PATH (Debian's package; .ci/run installs it).
 */
export class RedisServer {
  private child?: ChildProcess;
  private log = "";

  private constructor(
    readonly port: number,
    private readonly dir: string | undefined,
  ) {}

  static async start(opts: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = opts.persistent ? await mkdtemp(join(tmpdir(), "tollgate-redis-")) : undefined;
    const server = new RedisServer(await freePort(), dir);
    await server.launch();
    return server;
  }

  url(db = 0): string {
    return `redis://127.0.0.1:${this.port}/${db}`;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  /** Stops it the way a crash would (SIGKILL): no shutdown, connections just drop. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await once(child, "exit");
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.launch();
  }

  /** Stops it and removes its files. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    const persistence = this.dir ? ["--appendonly", "yes", "--appendfsync", "always", "--dir", this.dir] : ["--appendonly", "no"];
    const child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", ...persistence], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.log = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => (this.log += d));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.log += d));
    const failed = new Promise<never>((_, reject) => {
      child.once("error", (err) => reject(new Error(`cannot run redis-server (is it installed?): ${err.message}`)));
      child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}:\n${this.log}`)));
    });
    failed.catch(() => {});
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (!(await answersPing(this.port))) {
      if (Date.now() > deadline) throw new Error(`redis-server did not start on ${this.port}:\n${this.log}`);
      await Promise.race([sleep(25), failed]);
    }
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  server.close();
  await once(server, "close");
  return port;
}

async function answersPing(port: number): Promise<boolean> {
  const socket = new Socket();
  try {
    socket.connect(port, "127.0.0.1");
    await once(socket, "connect");
    socket.write("PING\r\n");
    const [data] = (await Promise.race([once(socket, "data"), sleep(500).then(() => [Buffer.from("")])])) as [Buffer];
    return data.toString().startsWith("+PONG");
  } catch {
    return false;
  } finally {
    socket.destroy();
  }
}
