import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, onProcessExit } from './ports.js';
import { GiveUp, waitFor } from './wait.js';

const REDIS_BIN = '/usr/bin/redis-server';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
const OUTPUT_TAIL_CHARS = 4_000;

export interface RedisServerOptions {
  /** Enable AOF with `appendfsync always`, so acknowledged writes survive kill9(). */
  appendonly?: boolean;
  /** Working dir (AOF lives here). Defaults to a fresh temp dir, removed when the test process exits. */
  dir?: string;
}

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  readonly dir: string;
  /** SIGKILL (crash, no shutdown hooks) and wait for the process to exit. No-op if not running. */
  kill9(): Promise<void>;
  /** Graceful SIGTERM shutdown (nothing is saved: `--save ""`), wait for exit. No-op if not running. */
  stop(): Promise<void>;
  /** Start again on the same port and dir (stopping first if still running); resolves once it answers PING. */
  restart(): Promise<void>;
}

// Children and temp dirs still alive when the test process ends (cleanup must be synchronous).
const liveChildren = new Set<ChildProcess>();
const ownedDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  onProcessExit(() => {
    for (const child of liveChildren) child.kill('SIGKILL');
    for (const dir of ownedDirs) rmSync(dir, { recursive: true, force: true });
    ownedDirs.clear();
  });
}

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

function waitForExit(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** One raw RESP PING; true only on +PONG (a loading AOF answers -LOADING, so we keep waiting). */
function ping(port: number, timeoutMs = 250): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let reply = '';
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  installExitHook();
  const appendonly = opts.appendonly ?? false;
  let dir = opts.dir;
  if (dir === undefined) {
    dir = await mkdtemp(path.join(os.tmpdir(), 'irs-redis-'));
    ownedDirs.add(dir);
  }
  const workDir = dir;
  const port = await freePort();

  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', appendonly ? 'yes' : 'no',
    ...(appendonly ? ['--appendfsync', 'always'] : []),
    '--dir', workDir,
    '--daemonize', 'no',
  ];

  let child: ChildProcess | undefined;

  async function launch(): Promise<void> {
    const proc = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveChildren.add(proc);
    proc.once('exit', () => liveChildren.delete(proc));
    // Redis logs to stdout; keep a tail of both streams for the error message.
    let output = '';
    const capture = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
    };
    proc.stdout?.on('data', capture);
    proc.stderr?.on('data', capture);
    let spawnError: Error | undefined;
    proc.once('error', (err) => {
      spawnError = err;
    });
    child = proc;

    try {
      await waitFor(
        `redis-server on port ${port} to answer PING`,
        async () => {
          if (spawnError !== undefined) throw new GiveUp(`it failed to spawn: ${spawnError.message}`);
          if (!isRunning(proc)) throw new GiveUp(`it exited early (code ${String(proc.exitCode)}, signal ${String(proc.signalCode)})`);
          return (await ping(port)) ? true : undefined;
        },
        { timeoutMs: START_TIMEOUT_MS, intervalMs: 50 },
      );
    } catch (err) {
      if (isRunning(proc)) {
        proc.kill('SIGKILL');
        await waitForExit(proc);
      }
      throw new Error(`${(err as Error).message}:\n${output}`);
    }
  }

  async function kill9(): Promise<void> {
    if (child === undefined || !isRunning(child)) return;
    child.kill('SIGKILL');
    await waitForExit(child);
  }

  async function stop(): Promise<void> {
    if (child === undefined || !isRunning(child)) return;
    const proc = child;
    proc.kill('SIGTERM');
    // A wedged server must not hang the suite: escalate to SIGKILL.
    const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await waitForExit(proc);
    clearTimeout(timer);
  }

  async function restart(): Promise<void> {
    await stop();
    await launch();
  }

  await launch();
  return { port, url: `redis://127.0.0.1:${port}`, dir: workDir, kill9, stop, restart };
}
